"""Time budgets, retries, breakers and hedging around a provider call (pure domain rules,
with real threads for hedging)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gantry.domain.circuit_breaker import BreakerPolicy
from gantry.domain.deadlines import Abandoned, CancelToken, caller_scope, current_call
from gantry.domain.errors import InvalidRequest
from gantry.domain.provider_errors import (
    CircuitOpen,
    ProviderThrottled,
    ProviderTimeout,
    ProviderUnavailable,
)
from gantry.domain.registry import ModelSpec
from gantry.domain.resilience import Resilience, ResilienceSettings
from gantry.domain.retry import RetryPolicy


def spec(**extra: Any) -> ModelSpec:
    return ModelSpec.from_dict(
        {
            "id": "remote",
            "provider": "openai",
            "version": "1",
            "context_window": 100,
            "max_output_tokens": 10,
            "capabilities": ["chat", "embeddings"],
            **extra,
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def resilience(
    attempts: int = 3,
    failures: int = 5,
    request_timeout: float = 60.0,
    clock: Any = time.monotonic,
    sleeps: list[float] | None = None,
) -> Resilience:
    settings = ResilienceSettings(
        request_timeout=request_timeout,
        attempt_timeout=30.0,
        retry=RetryPolicy(max_attempts=attempts),
        breaker=BreakerPolicy(failure_threshold=failures, open_seconds=30.0),
    )
    sink = sleeps if sleeps is not None else []
    return Resilience(settings, clock=clock, sleep=sink.append, rng=random.Random(3))


class Flaky:
    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_transient_failures_are_retried_with_backoff() -> None:
    sleeps: list[float] = []
    r = resilience(sleeps=sleeps)
    fn = Flaky(ProviderUnavailable("500"), ProviderThrottled("429", retry_after=0.5))
    assert r.call(spec(), fn, r.budget()) == "ok"
    assert fn.calls == 3
    assert len(sleeps) == 2 and sleeps[1] >= 0.5  # the provider's Retry-After is honoured


def test_the_last_failure_is_raised_when_attempts_run_out() -> None:
    r = resilience(attempts=2)
    fn = Flaky(ProviderUnavailable("a"), ProviderUnavailable("b"), ProviderUnavailable("c"))
    with pytest.raises(ProviderUnavailable, match="b"):
        r.call(spec(), fn, r.budget())
    assert fn.calls == 2


@pytest.mark.parametrize(
    "error",
    [InvalidRequest("bad"), ProviderUnavailable("denied", transient=False), RuntimeError("bug")],
)
def test_non_transient_failures_are_not_retried(error: Exception) -> None:
    r = resilience()
    fn = Flaky(error)
    with pytest.raises(type(error)):
        r.call(spec(), fn, r.budget())
    assert fn.calls == 1


def test_retries_never_outlast_the_budget() -> None:
    clock = Clock()
    r = resilience(attempts=10, request_timeout=1.0, clock=clock)

    def slow_failure() -> str:
        clock.now += 0.6  # each attempt takes 0.6 s of a 1 s budget
        raise ProviderUnavailable("500")

    with pytest.raises(ProviderUnavailable):
        r.call(spec(), slow_failure, r.budget())
    assert clock.now == pytest.approx(1.2)  # two attempts, the budget then gone


def test_each_attempt_sees_the_nested_deadline() -> None:
    seen: list[float] = []

    def fn() -> str:
        call = current_call()
        assert call is not None
        seen.append(call.timeout())
        return "ok"

    r = resilience(request_timeout=20.0)
    r.call(spec(timeout_seconds=4), fn, r.budget())
    r.call(spec(), fn, r.budget())
    assert 3.9 < seen[0] <= 4.0  # the model's own attempt timeout
    assert 19.9 < seen[1] <= 20.0  # the budget, which is below the deployment's attempt limit
    assert current_call() is None  # nothing leaks out of the call


def test_an_exhausted_budget_is_a_timeout_without_calling() -> None:
    clock = Clock()
    r = resilience(clock=clock, request_timeout=1.0)
    budget = r.budget()
    clock.now += 2
    fn = Flaky()
    with pytest.raises(ProviderTimeout):
        r.call(spec(), fn, budget)
    assert fn.calls == 0


def test_the_breaker_opens_then_fails_fast_then_recovers() -> None:
    clock = Clock()
    r = resilience(attempts=1, failures=2, clock=clock)
    broken = Flaky(*[ProviderUnavailable("500")] * 2)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            r.call(spec(), broken, r.budget())
    healthy = Flaky()
    with pytest.raises(CircuitOpen) as opened:
        r.call(spec(), healthy, r.budget())
    assert healthy.calls == 0 and opened.value.retry_after == 30.0
    clock.now += 30  # half-open: one probe goes through and closes it
    assert r.call(spec(), healthy, r.budget()) == "ok"
    assert r.call(spec(), healthy, r.budget()) == "ok"


def test_refused_requests_do_not_open_the_breaker() -> None:
    r = resilience(attempts=1, failures=2)
    for _ in range(5):
        with pytest.raises(InvalidRequest):
            r.call(spec(), Flaky(InvalidRequest("too long")), r.budget())
    assert r.call(spec(), Flaky(), r.budget()) == "ok"


# --- a caller that leaves --------------------------------------------------------------------


def test_a_caller_that_leaves_cancels_the_attempt_without_retry_or_blame() -> None:
    sleeps: list[float] = []
    r = resilience(attempts=3, failures=1, sleeps=sleeps)
    caller = CancelToken()
    calls = 0

    def hangs_until_cancelled() -> str:
        nonlocal calls
        calls += 1
        call = current_call()
        assert call is not None
        caller.cancel()  # the client leaves while the attempt runs
        assert call.cancel.cancelled
        raise ProviderUnavailable("cancelled", reason="cancelled", transient=False)

    with caller_scope(caller), pytest.raises(Abandoned):
        r.call(spec(), hangs_until_cancelled, r.budget())
    assert calls == 1 and sleeps == []
    assert r.breaker(spec()).state == "closed"  # one failure would have opened it


def test_no_attempt_starts_once_the_caller_has_left() -> None:
    r = resilience()
    caller = CancelToken()
    caller.cancel()
    flaky = Flaky()
    with caller_scope(caller), pytest.raises(Abandoned):
        r.call(spec(), flaky, r.budget())
    assert flaky.calls == 0


# --- hedging ---------------------------------------------------------------------------------


class Racer:
    """The first call hangs until cancelled (or 5 s); later calls answer at once."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.first_cancelled = threading.Event()

    def __call__(self) -> str:
        with self.lock:
            self.calls += 1
            number = self.calls
        if number == 1:
            call = current_call()
            assert call is not None
            call.cancel.on_cancel(self.first_cancelled.set)
            self.first_cancelled.wait(5)
            return "slow"
        return "fast"


# Long enough that the primary has surely started before the hedge, even on a busy machine.
HEDGED = {"hedging": {"enabled": True, "delay_ms": 200}}


def test_hedging_returns_the_faster_answer_and_cancels_the_slower() -> None:
    r = resilience()
    racer = Racer()
    started = time.monotonic()
    assert r.call(spec(**HEDGED), racer, r.budget(), hedge=True) == "fast"
    assert time.monotonic() - started < 1.0
    assert racer.first_cancelled.wait(1)
    assert (r.hedging.hedges, r.hedging.hedge_wins) == (1, 1)


def test_hedging_is_off_unless_the_registry_enables_it() -> None:
    r = resilience()
    calls: list[int] = []

    def slowish() -> str:
        calls.append(1)
        time.sleep(0.1)
        return "ok"

    assert r.call(spec(), slowish, r.budget(), hedge=True) == "ok"
    assert calls == [1] and r.hedging.hedges == 0


def test_a_fast_answer_is_not_hedged() -> None:
    r = resilience()
    fn = Flaky()
    assert r.call(spec(**HEDGED), fn, r.budget(), hedge=True) == "ok"
    assert fn.calls == 1 and r.hedging.hedges == 0


def test_hedge_delay_follows_the_recent_p95() -> None:
    r = resilience()
    model = spec(**HEDGED)
    window = r.latencies.get(model.provider, model.provider_model_id)
    assert r.hedge_delay(model, window) == 0.2  # the registry's delay until enough samples
    for i in range(100):
        window.record(0.010 if i < 95 else 0.500)
    assert r.hedge_delay(model, window) == 0.010


def test_a_hedged_call_that_fails_is_retried() -> None:
    r = resilience()
    fn = Flaky(ProviderUnavailable("500"))
    assert r.call(spec(**HEDGED), fn, r.budget(), hedge=True) == "ok"
    assert fn.calls == 2


# --- streams ---------------------------------------------------------------------------------


class StreamOpener:
    def __init__(self, fail_opening: int, fail_after: int | None = None) -> None:
        self.fail_opening = fail_opening
        self.fail_after = fail_after
        self.opened = 0

    def __call__(self) -> Iterator[int]:
        self.opened += 1
        number = self.opened

        def events() -> Iterator[int]:
            if number <= self.fail_opening:
                raise ProviderUnavailable("no first event")
            for i in range(3):
                if self.fail_after is not None and i == self.fail_after:
                    raise ProviderUnavailable("died mid-stream")
                yield i

        return events()


def test_streams_are_retried_until_the_first_event() -> None:
    r = resilience()
    opener = StreamOpener(fail_opening=2)
    assert list(r.open_stream(spec(), opener, r.budget())) == [0, 1, 2]
    assert opener.opened == 3


def test_a_stream_is_not_retried_once_it_started() -> None:
    r = resilience(failures=1)
    opener = StreamOpener(fail_opening=0, fail_after=2)
    seen: list[int] = []
    with pytest.raises(ProviderUnavailable):
        for event in r.open_stream(spec(), opener, r.budget()):
            seen.append(event)
    assert seen == [0, 1] and opener.opened == 1
    with pytest.raises(CircuitOpen):  # the mid-stream failure counted against the provider
        next(r.open_stream(spec(), opener, r.budget()))
