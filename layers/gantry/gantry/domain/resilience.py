"""Resilience around one provider call: time budget, retries, circuit breaker, hedging.

Timeouts nest. A request has a budget (`request_timeout`, set below the function's own
timeout, itself below the client-facing one); each attempt gets the smaller of the model's
`timeout_seconds` (or `attempt_timeout`) and what is left of the budget, and the adapter
applies that deadline to its I/O (`gantry.domain.deadlines.current_call`). So a provider
that does not answer gives 504 `model_timeout` before the platform kills the function.

Only transient failures are retried (throttling, 5xx, resets, timeouts with time left), with
full-jitter exponential backoff and never past the budget. Every outcome feeds the
provider+model's circuit breaker. Hedged calls (short idempotent ones, when the registry
enables them) send a second attempt when the first is slower than the backend's recent p95;
the first answer wins and the other is cancelled.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

from gantry.domain.circuit_breaker import BreakerPolicy, Breakers, CircuitBreaker
from gantry.domain.deadlines import (
    Abandoned,
    CallContext,
    Deadline,
    attempt_context,
    call_scope,
    caller_left,
)
from gantry.domain.errors import GantryError
from gantry.domain.latency import Latencies, LatencyWindow
from gantry.domain.provider_errors import CircuitOpen, ProviderTimeout, is_provider_failure
from gantry.domain.registry import ModelSpec
from gantry.domain.retry import RetryPolicy

T = TypeVar("T")
E = TypeVar("E")

# How long past an attempt's deadline to wait for the adapter's own timeout error.
_GRACE_SECONDS = 0.05


@dataclass(frozen=True)
class ResilienceSettings:
    request_timeout: float = 60.0
    attempt_timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    hedge_min_samples: int = 20
    hedge_percentile: float = 95.0
    hedge_threads: int = 32


@dataclass
class HedgeStats:
    calls: int = 0
    hedges: int = 0
    hedge_wins: int = 0


class Resilience:
    def __init__(
        self,
        settings: ResilienceSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings or ResilienceSettings()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.breakers = Breakers(self.settings.breaker, clock)
        self.latencies = Latencies()
        self.hedging = HedgeStats()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def budget(self) -> Deadline:
        """The time budget of a request starting now."""
        return Deadline.after(self.settings.request_timeout, self._clock)

    def attempt_limit(self, spec: ModelSpec) -> float:
        return spec.policy.timeout_seconds or self.settings.attempt_timeout

    def breaker(self, spec: ModelSpec) -> CircuitBreaker:
        return self.breakers.get(spec.provider, spec.provider_model_id)

    # --- buffered calls ------------------------------------------------------------------

    def call(
        self, spec: ModelSpec, fn: Callable[[], T], budget: Deadline, hedge: bool = False
    ) -> T:
        """Run `fn` under the budget with retries; hedged if asked and the model allows it."""
        breaker = self.breaker(spec)
        window = self.latencies.get(spec.provider, spec.provider_model_id)
        attempt = 0
        while True:
            deadline = self._admit_attempt(spec, breaker, budget)
            started = self._clock()
            try:
                if hedge and spec.policy.hedge:
                    result = self._hedged(spec, fn, deadline, window)
                else:
                    with call_scope(attempt_context(deadline)):
                        result = fn()
                    window.record(self._clock() - started)
            except BaseException as error:
                if caller_left():
                    breaker.record_neutral()
                    raise Abandoned() from error
                self._record(breaker, error)
                if not self._retry(error, attempt, budget):
                    raise
                attempt += 1
                continue
            breaker.record_success()
            return result

    def _admit_attempt(
        self, spec: ModelSpec, breaker: CircuitBreaker, budget: Deadline
    ) -> Deadline:
        if caller_left():
            raise Abandoned()
        if not breaker.acquire():
            raise CircuitOpen(spec.id, breaker.retry_after())
        deadline = budget.within(self.attempt_limit(spec))
        if deadline.expired:
            breaker.record_neutral()
            raise ProviderTimeout(spec.id, self.settings.request_timeout, transient=False)
        return deadline

    def _record(self, breaker: CircuitBreaker, error: BaseException) -> None:
        if is_provider_failure(error):
            breaker.record_failure()
        elif isinstance(error, GantryError):
            breaker.record_success()  # the provider answered: the request was refused
        else:
            breaker.record_neutral()

    def _retry(self, error: BaseException, attempt: int, budget: Deadline) -> bool:
        policy = self.settings.retry
        retry_after = getattr(error, "provider_retry_after", None)
        wait_for = policy.delay(attempt, retry_after, self._rng)
        if not policy.should_retry(error, attempt, budget.remaining(), wait_for):
            return False
        self._sleep(wait_for)
        return True

    # --- hedging -------------------------------------------------------------------------

    def hedge_delay(self, spec: ModelSpec, window: LatencyWindow) -> float:
        if len(window) >= self.settings.hedge_min_samples:
            recent = window.percentile(self.settings.hedge_percentile)
            if recent is not None:
                return max(0.001, recent)
        return spec.policy.hedge_delay_ms / 1000

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self.settings.hedge_threads, thread_name_prefix="gantry-hedge"
                    )
        return self._pool

    def _hedged(
        self, spec: ModelSpec, fn: Callable[[], T], deadline: Deadline, window: LatencyWindow
    ) -> T:
        pool = self._executor()
        self.hedging.calls += 1
        attempts: dict[Future[T], tuple[CallContext, float]] = {}

        def launch() -> Future[T]:
            context = attempt_context(deadline)
            started = self._clock()

            def run() -> T:
                with call_scope(context):
                    result = fn()
                window.record(self._clock() - started)
                return result

            future = pool.submit(run)
            attempts[future] = (context, started)
            return future

        first = launch()
        done, _ = wait([first], timeout=min(self.hedge_delay(spec, window), deadline.remaining()))
        if not done and not deadline.expired:
            self.hedging.hedges += 1
            launch()
        pending: set[Future[T]] = set(attempts)
        failure: BaseException | None = None
        try:
            while pending:
                done, pending = wait(
                    pending,
                    timeout=deadline.remaining() + _GRACE_SECONDS,
                    return_when=FIRST_COMPLETED,
                )
                if not done:
                    break
                for future in done:
                    error = future.exception()
                    if error is None:
                        if future is not first:
                            self.hedging.hedge_wins += 1
                        return future.result()
                    failure = failure or error
            if failure is not None and not pending:
                raise failure
            raise ProviderTimeout(spec.id, self.attempt_limit(spec))
        finally:
            for future, (context, started) in attempts.items():
                if not future.done():
                    future.cancel()
                    context.cancel.cancel()
                    window.record(self._clock() - started)  # a lower bound of its latency

    # --- streams -------------------------------------------------------------------------

    def open_stream(
        self, spec: ModelSpec, opener: Callable[[], Iterator[E]], budget: Deadline
    ) -> Generator[E, None, None]:
        """The provider's stream, opened with retries until its first event arrives (nothing
        has reached the client before that); later failures end the stream."""
        breaker = self.breaker(spec)
        window = self.latencies.get(spec.provider, spec.provider_model_id)
        attempt = 0
        while True:
            deadline = self._admit_attempt(spec, breaker, budget)
            started = self._clock()
            events: Iterator[E] | None = None
            try:
                with call_scope(attempt_context(deadline)):
                    events = opener()
                    first = next(events)
            except StopIteration:
                breaker.record_success()
                return
            except BaseException as error:
                if events is not None:
                    _close(events)
                if caller_left():  # the client left before the first event: not a failure
                    breaker.record_neutral()
                    raise Abandoned() from error
                self._record(breaker, error)
                if not self._retry(error, attempt, budget):
                    raise
                attempt += 1
                continue
            break
        window.record(self._clock() - started)
        breaker.record_success()
        try:
            yield first
            yield from events
        except BaseException as error:
            if is_provider_failure(error):
                breaker.record_failure()
            raise
        finally:
            _close(events)


def _close(events: Iterator[object]) -> None:
    close = getattr(events, "close", None)
    if close is not None:
        close()
