"""Response caching policy: what may be served from the cache, under which key, and how
the request's `Cache-Control` and `X-Semantic-Cache` change that.

- Exact cache: deterministic calls only (embeddings and classifications always; chat and
  text completions with temperature 0 or a seed). The key is a hash of the organization,
  the model id and version, the endpoint and the normalised call (the provider's
  parameters with every default filled in), so parameter order, whitespace and defaults
  sent explicitly do not change it, and no organization can ever read another's entry.
- Semantic cache (chat only, opt-in): the last message's embedding is compared with the
  prompts cached for the same organization, model, earlier messages and parameters; at or
  above the threshold the cached answer is served. Each such group keeps at most
  `SEMANTIC_SLOTS` prompts in one index item, so a lookup reads at most two items and
  compares at most `SEMANTIC_SLOTS` vectors.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gantry.domain.errors import InvalidRequest
from gantry.domain.inference import Plan
from gantry.domain.registry import ModelSpec

CACHEABLE_ENDPOINTS = frozenset(
    {"chat.completions", "completions", "embeddings", "classifications"}
)
SEMANTIC_ENDPOINTS = frozenset({"chat.completions"})
SEMANTIC_SLOTS = 64
MAX_SEMANTIC_PROMPT_CHARS = 8192

CacheStatus = Literal["HIT", "MISS", "BYPASS"]

CACHE_CONTROL_HEADER = "Cache-Control"
SEMANTIC_HEADER = "X-Semantic-Cache"
SEMANTIC_KEY_METADATA = "semantic_cache"

_MAX_AGE = re.compile(r"^max-age\s*=\s*\"?(\d{1,10})\"?$")
_THRESHOLD = re.compile(r"^threshold\s*=\s*([0-9]*\.?[0-9]+)$")


# --- what the request asks --------------------------------------------------------------


@dataclass(frozen=True)
class CacheDirectives:
    """The request's `Cache-Control`: `no-cache` skips the lookup, `no-store` skips the
    lookup and the write, `max-age=N` accepts only entries at most N seconds old."""

    no_cache: bool = False
    no_store: bool = False
    max_age: int | None = None


def parse_cache_control(value: str | None) -> CacheDirectives:
    if not value:
        return CacheDirectives()
    no_cache = no_store = False
    max_age: int | None = None
    for raw in value.split(","):
        directive = raw.strip().lower()
        if not directive:
            continue
        if directive == "no-cache":
            no_cache = True
        elif directive == "no-store":
            no_store = True
        elif directive.startswith("max-age"):
            match = _MAX_AGE.match(directive)
            if match is None:
                raise InvalidRequest(
                    f"Invalid {CACHE_CONTROL_HEADER} directive '{raw.strip()}': max-age takes "
                    "a whole number of seconds, e.g. 'max-age=3600'.",
                    code="invalid_value",
                    param=CACHE_CONTROL_HEADER,
                )
            max_age = int(match.group(1))
        # Other directives (private, no-transform, ...) do not apply to a request here.
    return CacheDirectives(no_cache, no_store, max_age)


def parse_semantic(value: str | None, param: str = SEMANTIC_HEADER) -> float | None:
    """`threshold=0.95` -> 0.95; `off` -> 0.0 (explicitly off); nothing -> None."""
    if value is None or not value.strip():
        return None
    text = value.strip().lower()
    if text in ("off", "false", "0"):
        return 0.0
    match = _THRESHOLD.match(text)
    threshold = float(match.group(1)) if match else math.nan
    if not 0.0 < threshold <= 1.0:
        raise InvalidRequest(
            f"Invalid {param} value '{value.strip()}': use 'threshold=<number>' with a "
            "number above 0 and at most 1 (cosine similarity, e.g. 'threshold=0.95'), or "
            "'off'.",
            code="invalid_value",
            param=param,
        )
    return threshold


@dataclass(frozen=True)
class CachePolicy:
    lookup: bool  # look for an exact entry
    semantic: float | None  # look for a similar prompt at this threshold
    store: bool  # write the answer on a miss
    max_age: int | None

    @property
    def skipped_status(self) -> CacheStatus:
        """The status when nothing was served from the cache."""
        return "MISS" if self.lookup or self.semantic else "BYPASS"


def decide(
    plan: Plan[Any], directives: CacheDirectives, semantic: float | None
) -> CachePolicy | None:
    """None when the endpoint is never cached (no X-Cache-Status at all)."""
    if plan.call is None or plan.endpoint not in CACHEABLE_ENDPOINTS:
        return None
    threshold = semantic if semantic and plan.endpoint in SEMANTIC_ENDPOINTS else None
    if threshold is not None and not semantic_prompt(plan.call):
        threshold = None
    usable = plan.deterministic or threshold is not None
    if not usable or directives.no_store:
        return CachePolicy(False, None, False, None)
    if directives.no_cache:
        return CachePolicy(False, None, True, None)
    return CachePolicy(plan.deterministic, threshold, True, directives.max_age)


# --- keys ---------------------------------------------------------------------------------


def _digest(parts: Mapping[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def entry_key(org_id: str, spec: ModelSpec, endpoint: str, call: Mapping[str, Any]) -> str:
    parts = {
        "org": org_id,
        "model": spec.id,
        "version": spec.version,
        "endpoint": endpoint,
        "call": call,
    }
    return f"{org_id}#{_digest(parts)}"


def semantic_prompt(call: Mapping[str, Any]) -> str:
    """The text the semantic cache compares: the last message's content."""
    messages = call.get("messages") or []
    if not messages:
        return ""
    return str(messages[-1][1])[:MAX_SEMANTIC_PROMPT_CHARS]


def index_key(org_id: str, spec: ModelSpec, endpoint: str, call: Mapping[str, Any]) -> str:
    """Prompts are only comparable under the same model, earlier messages, role of the last
    message and parameters: that context names the index item."""
    messages = call.get("messages") or []
    context = [*messages[:-1], [messages[-1][0], None, messages[-1][2]]] if messages else []
    parts = {
        "org": org_id,
        "model": spec.id,
        "version": spec.version,
        "endpoint": endpoint,
        "context": context,
        "params": call.get("params"),
    }
    return f"SEM#{org_id}#{_digest(parts)}"


def slot_of(prompt: str) -> int:
    """The index slot a prompt always lands in (a newer prompt in the slot replaces it)."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:4], "big") % SEMANTIC_SLOTS


# --- entries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEntry:
    payload: bytes  # the encoded outcome (gantry.domain.cache_codec)
    created_at: float


@dataclass(frozen=True)
class SemanticSlot:
    vector: tuple[float, ...]
    entry: str  # the key of the cached answer
    created_at: float


class CacheStore(Protocol):
    def get(self, key: str, now: float) -> StoredEntry | None:
        """The entry, or None if absent or past its TTL."""
        ...

    def put(self, key: str, entry: StoredEntry, ttl_seconds: int) -> bool:
        """Write the entry; False (writing nothing) when it is too large to store."""
        ...

    def slots(self, key: str, now: float) -> list[SemanticSlot]:
        """The prompts of one semantic index item (at most SEMANTIC_SLOTS)."""
        ...

    def put_slot(self, key: str, slot: int, entry: SemanticSlot, ttl_seconds: int) -> None: ...


def fresh(created_at: float, now: float, max_age: int | None) -> bool:
    return max_age is None or now - created_at <= max_age


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b) or not a:
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def nearest(
    vector: Sequence[float], slots: Sequence[SemanticSlot], now: float, max_age: int | None
) -> tuple[SemanticSlot, float] | None:
    """The most similar fresh cached prompt and its similarity."""
    best: tuple[SemanticSlot, float] | None = None
    for slot in slots:
        if not fresh(slot.created_at, now, max_age):
            continue
        similarity = cosine(vector, slot.vector)
        if best is None or similarity > best[1]:
            best = (slot, similarity)
    return best
