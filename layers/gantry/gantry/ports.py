"""Interfaces the domain depends on. Adapters implement them; nothing here touches AWS."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gantry.domain.keys import KeyRecord
from gantry.domain.orgs import Organization
from gantry.domain.registry import ModelSpec

# --- model provider -------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "developer" | "user" | "assistant" | "tool"
    content: str
    name: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    """Generation controls, already validated against the model."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class Generation:
    """One sampled choice. `finish_reason` is "stop" or "length"."""

    text: str
    finish_reason: str
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class GenerationResult:
    choices: tuple[Generation, ...]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)


@dataclass(frozen=True)
class TextDelta:
    """More text of choice `index`; `tokens` is how many generated tokens it covers."""

    index: int
    text: str
    tokens: int


@dataclass(frozen=True)
class ChoiceDone:
    """Choice `index` ended; `completion_tokens` is its exact billed count."""

    index: int
    finish_reason: str
    completion_tokens: int


StreamEvent = TextDelta | ChoiceDone


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int


@dataclass(frozen=True)
class ClassificationResult:
    """One score mapping per input, each over the requested labels and summing to 1."""

    scores: tuple[Mapping[str, float], ...]
    prompt_tokens: int


@dataclass(frozen=True)
class ModerationVerdict:
    flagged: bool
    categories: Mapping[str, bool]
    category_scores: Mapping[str, float]


@dataclass(frozen=True)
class ModerationResult:
    results: tuple[ModerationVerdict, ...]
    prompt_tokens: int


class ModelProvider(Protocol):
    """A backend that runs models. Every call returns content plus exact usage."""

    def is_instant(self, model: ModelSpec) -> bool:
        """True when calls answer in microseconds and can run on the event loop itself
        rather than on a worker thread (an echo model, a cache)."""
        ...

    def count_chat_tokens(self, model: ModelSpec, messages: Sequence[Message]) -> int:
        """Prompt tokens the chat call will be billed for (exact where the tokenizer is known)."""
        ...

    def count_tokens(self, model: ModelSpec, text: str) -> int: ...

    def chat(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> GenerationResult: ...

    def complete(
        self, model: ModelSpec, prompt: str, params: SamplingParams
    ) -> GenerationResult: ...

    def chat_stream(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> Iterator[StreamEvent]:
        """The same generation as `chat`, as it is produced: choices one after another, each
        a run of TextDelta then one ChoiceDone. Closing the iterator stops the generation."""
        ...

    def complete_stream(
        self, model: ModelSpec, prompt: str, params: SamplingParams
    ) -> Iterator[StreamEvent]: ...

    def embed(
        self, model: ModelSpec, inputs: Sequence[str], dimensions: int | None
    ) -> EmbeddingResult: ...

    def classify(
        self, model: ModelSpec, inputs: Sequence[str], labels: Sequence[str]
    ) -> ClassificationResult: ...

    def moderate(self, model: ModelSpec, inputs: Sequence[str]) -> ModerationResult: ...


# --- stores and clock -----------------------------------------------------------------


class KeyStore(Protocol):
    def get_key(self, key_id: str) -> KeyRecord | None: ...

    def put_key(self, record: KeyRecord) -> None: ...

    def create_key(self, record: KeyRecord) -> None:
        """Write a new key; Conflict if its id is taken."""
        ...

    def list_keys(self, org_id: str, limit: int, after: str | None) -> tuple[list[KeyRecord], bool]:
        """Up to `limit` of the organization's keys in key id order, starting after the key id
        `after`, and whether more follow."""
        ...

    def update_key(self, record: KeyRecord, now: float) -> bool:
        """Write the key's name, scopes, limits and expires_at. False, writing nothing, if it
        is revoked, expired at `now`, or its rotated_to is no longer record.rotated_to."""
        ...

    def revoke_key(self, key_id: str, at: float) -> bool:
        """Set revoked_at; False if the key is unknown or already revoked."""
        ...

    def rotate_key(self, new: KeyRecord, old_expires_at: float, now: float) -> bool:
        """Atomically write `new` and mark the key it was rotated from (new.rotated_from) as
        rotated to it, expiring at `old_expires_at`. False, writing nothing, if that key is
        revoked, expired at `now` or already rotated."""
        ...

    def touch_key(self, key_id: str, at: float, cutoff: float) -> bool:
        """Set last_used_at to `at` unless it is already `cutoff` or later."""
        ...

    def get_org(self, org_id: str) -> Organization | None: ...

    def put_org(self, org: Organization) -> None: ...

    def create_org(self, org: Organization) -> bool:
        """Write a new organization; False if one with its id exists."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float: ...
