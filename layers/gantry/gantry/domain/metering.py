"""Metering: admission before a model call, settlement after it.

The inference flow calls a `Meter` around every provider call: `admit` reserves the
request's estimate against every limit (or refuses it), `settle` records what the call
really used (refunding the difference) exactly once per request id, and `release` returns a
reservation whose call failed. `Unmetered` admits everything and records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gantry.domain.keys import Principal
from gantry.domain.registry import ModelSpec


@dataclass(frozen=True)
class Estimate:
    """What a request may use at most: prompt tokens plus every completion's max_tokens."""

    tokens: int
    cost_usd: float


@dataclass(frozen=True)
class Actual:
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    # Prompt tokens served from the response cache (a hit bills at the cached price).
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Admission:
    """A granted reservation; `headers` are the rate-limit headers for the response."""

    request_id: str
    principal: Principal
    endpoint: str
    model: ModelSpec
    estimate: Estimate
    headers: dict[str, str] = field(default_factory=dict)
    token: object = None  # the meter's own bookkeeping (reservation ids, lease ids)


class Meter(Protocol):
    # True when admit/settle/release do no I/O, so instant models may run on the event loop.
    inline: bool

    def admit(
        self,
        request_id: str,
        principal: Principal,
        endpoint: str,
        model: ModelSpec,
        estimate: Estimate,
    ) -> Admission:
        """Reserve `estimate`, or raise RateLimited / QuotaExceeded."""
        ...

    def settle(self, admission: Admission, actual: Actual) -> None:
        """Record real usage once per request id and refund what was reserved beyond it."""
        ...

    def release(self, admission: Admission) -> None:
        """The call failed before producing anything billable: return the reservation."""
        ...


class Unmetered:
    """Admits everything and records nothing (limits and usage switched off)."""

    inline = True

    def admit(
        self,
        request_id: str,
        principal: Principal,
        endpoint: str,
        model: ModelSpec,
        estimate: Estimate,
    ) -> Admission:
        return Admission(request_id, principal, endpoint, model, estimate)

    def settle(self, admission: Admission, actual: Actual) -> None:
        return None

    def release(self, admission: Admission) -> None:
        return None
