"""Retries: jittered exponential backoff for transient provider failures only."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gantry.domain.provider_errors import is_transient


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_seconds: float = 0.1
    cap_seconds: float = 2.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempts count from 0).

        Full jitter over an exponentially growing window, but never sooner than a
        provider's own Retry-After, which it sends when it knows when it can serve again.
        """
        window = min(self.cap_seconds, self.base_seconds * 2**attempt)
        wait = rng.uniform(0.0, window)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap_seconds))
        return wait

    def should_retry(
        self, error: BaseException, attempt: int, remaining: float, wait: float
    ) -> bool:
        """Transient, attempts left, and the wait leaves time for another attempt."""
        return is_transient(error) and attempt + 1 < self.max_attempts and wait < remaining
