"""The response cache around a planned call: which lookups a request gets, the lookup
itself, and the write after a miss. The cache is an optimisation: a failing lookup is a
miss and a failing write is logged, never an error for the caller."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from gantry.domain.cache_codec import decode_outcome, encode_outcome
from gantry.domain.caching import (
    CACHE_CONTROL_HEADER,
    SEMANTIC_ENDPOINTS,
    SEMANTIC_HEADER,
    SEMANTIC_KEY_METADATA,
    CachePolicy,
    CacheStatus,
    SemanticSlot,
    StoredEntry,
    decide,
    entry_key,
    fresh,
    index_key,
    nearest,
    parse_cache_control,
    parse_semantic,
    semantic_prompt,
    slot_of,
)
from gantry.domain.inference import Outcome, Plan
from gantry.domain.keys import Principal
from gantry.runtime import Runtime

logger = logging.getLogger("gantry.cache")

# Seconds a request waits for its own cache writes (they run alongside settlement).
WRITE_WAIT_SECONDS = 2.0

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="gantry-cache")
    return _pool


@dataclass
class CacheContext:
    policy: CachePolicy
    key: str
    index: str | None
    prompt: str
    status: CacheStatus
    similarity: float | None = None
    vector: tuple[float, ...] | None = None
    lookup_ms: float = 0.0

    @property
    def active(self) -> bool:
        """Whether the cache does any I/O for this request."""
        return self.policy.lookup or self.policy.semantic is not None or self.policy.store

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {"x-cache-status": self.status}
        if self.similarity is not None:
            headers["x-cache-similarity"] = f"{self.similarity:.4f}"
        return headers


def _key_semantic(rt: Runtime, principal: Principal) -> float | None:
    hit, record = rt.authenticator.cached(principal.key_id)
    if not hit or record is None:
        return None
    setting = record.metadata.get(SEMANTIC_KEY_METADATA)
    return parse_semantic(setting, "key metadata semantic_cache") if setting else None


def cache_context(
    rt: Runtime, request: Request, principal: Principal, plan: Plan[Any]
) -> CacheContext | None:
    """What the cache does for this request; None on routes that are never cached.
    A malformed Cache-Control or X-Semantic-Cache header is a 400 naming it."""
    if plan.call is None:
        return None
    directives = parse_cache_control(request.headers.get(CACHE_CONTROL_HEADER))
    semantic = parse_semantic(request.headers.get(SEMANTIC_HEADER))
    if semantic is None:
        semantic = _key_semantic(rt, principal)
    policy = decide(plan, directives, semantic)
    if policy is None:
        return None
    if not (policy.lookup or policy.semantic is not None or policy.store):
        return CacheContext(policy, "", None, "", policy.skipped_status)
    org = principal.org_id
    key = entry_key(org, plan.spec, plan.endpoint, plan.call)
    semantic_on = policy.semantic is not None or (
        policy.store and bool(semantic) and plan.endpoint in SEMANTIC_ENDPOINTS
    )
    index = index_key(org, plan.spec, plan.endpoint, plan.call) if semantic_on else None
    prompt = semantic_prompt(plan.call) if index else ""
    return CacheContext(policy, key, index if prompt else None, prompt, policy.skipped_status)


def _embed(rt: Runtime, text: str) -> tuple[float, ...]:
    spec = rt.registry.for_capability(rt.settings.semantic_cache_model, "embeddings")
    result = rt.inference.provider(spec).embed(spec, [text], None)
    return result.vectors[0]


def lookup(rt: Runtime, ctx: CacheContext, plan: Plan[Any]) -> Outcome | None:
    """The cached outcome for this request, or None. Reads at most three items: the exact
    entry, then (semantic) the index item and the answer it points to."""
    started = time.perf_counter()
    try:
        return _lookup(rt, ctx, plan)
    except Exception:
        logger.warning("cache lookup failed; serving a fresh answer", exc_info=True)
        return None
    finally:
        ctx.lookup_ms = (time.perf_counter() - started) * 1000


def _lookup(rt: Runtime, ctx: CacheContext, plan: Plan[Any]) -> Outcome | None:
    store, now, policy = rt.cache, rt.clock.now(), ctx.policy
    if policy.lookup:
        entry = store.get(ctx.key, now)
        if entry is not None and fresh(entry.created_at, now, policy.max_age):
            outcome = decode_outcome(entry.payload, plan.spec)
            if outcome is not None:
                ctx.status = "HIT"
                return outcome
    if ctx.index is None:
        return None
    ctx.vector = _embed(rt, ctx.prompt)
    if policy.semantic is None:
        return None
    best = nearest(ctx.vector, store.slots(ctx.index, now), now, policy.max_age)
    if best is None or best[1] < policy.semantic:
        return None
    slot, similarity = best
    entry = store.get(slot.entry, now)
    if entry is None or not fresh(entry.created_at, now, policy.max_age):
        return None
    outcome = decode_outcome(entry.payload, plan.spec)
    if outcome is not None:
        ctx.status, ctx.similarity = "HIT", round(similarity, 4)
    return outcome


def store(rt: Runtime, ctx: CacheContext, outcome: Outcome) -> list[Future[None]]:
    """Start the writes for a fresh answer (the entry, and its semantic slot) in parallel."""
    now = rt.clock.now()
    ttl = rt.settings.cache_ttl_seconds
    writes = [pool().submit(_write_entry, rt, ctx.key, outcome, now, ttl)]
    if ctx.index is not None:
        writes.append(pool().submit(_write_slot, rt, ctx, now, ttl))
    return writes


def _write_entry(rt: Runtime, key: str, outcome: Outcome, now: float, ttl: int) -> None:
    try:
        if not rt.cache.put(key, StoredEntry(encode_outcome(outcome), now), ttl):
            logger.info("answer too large for the cache; not stored")
    except Exception:
        logger.warning("cache write failed; the answer was served uncached", exc_info=True)


def _write_slot(rt: Runtime, ctx: CacheContext, now: float, ttl: int) -> None:
    try:
        vector = ctx.vector if ctx.vector is not None else _embed(rt, ctx.prompt)
        assert ctx.index is not None
        slot = SemanticSlot(vector, ctx.key, now)
        rt.cache.put_slot(ctx.index, slot_of(ctx.prompt), slot, ttl)
    except Exception:
        logger.warning("semantic cache write failed", exc_info=True)


def wait(writes: list[Future[None]]) -> None:
    deadline = time.monotonic() + WRITE_WAIT_SECONDS
    for write in writes:
        try:
            write.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception:
            return  # still running: it finishes on its own; a failure was logged
