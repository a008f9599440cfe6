"""Circuit breakers, one per provider and model: fail fast while a backend is down.

closed     calls pass; `failure_threshold` consecutive provider failures open the circuit.
open       calls are refused (the caller falls back or answers 503 with Retry-After) until
           `open_seconds` have passed.
half-open  one probe call at a time passes; its success closes the circuit, its failure
           opens it again for another `open_seconds`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    open_seconds: float = 30.0


class CircuitBreaker:
    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._state(self._clock())

    def _state(self, now: float) -> str:
        if self._opened_at is None:
            return CLOSED
        if now - self._opened_at < self._policy.open_seconds:
            return OPEN
        return HALF_OPEN

    def acquire(self) -> bool:
        """May a call go through now? In half-open state, True makes this call the probe."""
        with self._lock:
            state = self._state(self._clock())
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def retry_after(self) -> float:
        """Seconds until a call may be tried again (at least one)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            left = self._policy.open_seconds - (self._clock() - self._opened_at)
            return max(1.0, left)

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def record_failure(self) -> None:
        with self._lock:
            now = self._clock()
            if self._probing or self._state(now) == HALF_OPEN:
                self._opened_at = now
                self._probing = False
                return
            self._failures += 1
            if self._failures >= self._policy.failure_threshold:
                self._opened_at = now
                self._failures = 0

    def record_neutral(self) -> None:
        """The call ended in a way that says nothing about the provider's health (a bug on
        our side, a cancelled call): free the probe slot without changing the state."""
        with self._lock:
            self._probing = False


class Breakers:
    """The breakers of one process, created on first use per (provider, model)."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def get(self, provider: str, model: str) -> CircuitBreaker:
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(key, CircuitBreaker(self._policy, self._clock))
        return breaker
