"""Circuit breaker states and the retry policy, as pure rules."""

from __future__ import annotations

import random

from gantry.domain.circuit_breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    Breakers,
    CircuitBreaker,
)
from gantry.domain.errors import InvalidRequest
from gantry.domain.provider_errors import (
    CircuitOpen,
    ProviderMisconfigured,
    ProviderThrottled,
    ProviderTimeout,
    ProviderUnavailable,
)
from gantry.domain.retry import RetryPolicy


class Time:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    time = Time()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=3, open_seconds=10), time)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # the count starts again
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == CLOSED and breaker.acquire()
    breaker.record_failure()
    assert breaker.state == OPEN
    assert not breaker.acquire()
    assert breaker.retry_after() == 10.0


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    time = Time()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, open_seconds=10), time)
    breaker.record_failure()
    time.now += 6
    assert not breaker.acquire()
    assert breaker.retry_after() == 4.0
    time.now += 4
    assert breaker.state == HALF_OPEN
    assert breaker.acquire()  # the probe
    assert not breaker.acquire()  # everyone else still waits
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.acquire() and breaker.acquire()


def test_a_failed_probe_opens_it_again() -> None:
    time = Time()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, open_seconds=10), time)
    breaker.record_failure()
    time.now += 10
    assert breaker.acquire()
    breaker.record_failure()
    assert breaker.state == OPEN
    assert breaker.retry_after() == 10.0


def test_a_neutral_probe_frees_the_slot() -> None:
    time = Time()
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, open_seconds=10), time)
    breaker.record_failure()
    time.now += 10
    assert breaker.acquire()
    breaker.record_neutral()
    assert breaker.acquire()


def test_one_breaker_per_provider_and_model() -> None:
    breakers = Breakers(BreakerPolicy(failure_threshold=1), Time())
    breakers.get("openai", "a").record_failure()
    assert breakers.get("openai", "a").state == OPEN
    assert breakers.get("openai", "b").state == CLOSED
    assert breakers.get("bedrock", "a").state == CLOSED


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=0.1, cap_seconds=1.0)
    rng = random.Random(7)
    for attempt in range(6):
        waits = [policy.delay(attempt, None, rng) for _ in range(200)]
        window = min(1.0, 0.1 * 2**attempt)
        assert all(0 <= w <= window for w in waits)
        assert max(waits) > window * 0.8  # jitter spreads over the whole window
        assert len(set(waits)) > 150


def test_backoff_waits_at_least_the_providers_retry_after_up_to_the_cap() -> None:
    policy = RetryPolicy(base_seconds=0.1, cap_seconds=2.0)
    rng = random.Random(1)
    assert policy.delay(0, 1.5, rng) >= 1.5
    assert policy.delay(0, 30.0, rng) == 2.0


def test_only_transient_errors_are_retried_within_attempts_and_budget() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(ProviderUnavailable("5xx"), 0, remaining=10, wait=0.1)
    assert policy.should_retry(ProviderThrottled("429"), 1, remaining=10, wait=0.1)
    assert policy.should_retry(ProviderTimeout("m", 5.0), 0, remaining=10, wait=0.1)
    assert not policy.should_retry(ProviderUnavailable("5xx"), 2, remaining=10, wait=0.1)
    assert not policy.should_retry(ProviderUnavailable("5xx"), 0, remaining=0.05, wait=0.1)
    assert not policy.should_retry(ProviderMisconfigured("denied"), 0, remaining=10, wait=0.1)
    assert not policy.should_retry(CircuitOpen("m", 5.0), 0, remaining=10, wait=0.1)
    assert not policy.should_retry(InvalidRequest("bad"), 0, remaining=10, wait=0.1)
    assert not policy.should_retry(RuntimeError("bug"), 0, remaining=10, wait=0.1)


def test_circuit_open_error_says_so() -> None:
    error = CircuitOpen("vllm-test", 12.3)
    assert error.details == {
        "subsystem": "model_provider",
        "reason": "circuit_open",
        "circuit_open": True,
        "model": "vllm-test",
    }
    assert error.retry_after == 12.3
    assert error.code == "service_unavailable"
    assert error.retryable and not error.transient  # the client waits; Gantry does not retry
