"""Limits arithmetic: buckets, windows, leases, refunds, views and headers (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gantry.domain.errors import QuotaExceeded, RateLimited
from gantry.domain.keys import Principal
from gantry.domain.limits import (
    CONCURRENT,
    COST,
    KEY,
    MINUTE_NS,
    NS,
    ORG,
    RPM,
    TPD,
    TPM,
    Charge,
    LimitResolver,
    QuotaState,
    Refusal,
    Reservation,
    ScopeLimits,
    charged,
    day_end,
    format_duration,
    hold_of,
    key_scope_limits,
    limit_views,
    month_end,
    nano_usd,
    plan_charge,
    rate_limit_headers,
    refund,
    refund_for,
    refunded,
)
from gantry.domain.orgs import Limits, Organization

NOW = 1_795_000_000 * NS  # 2026-11-18T10:13:20Z


def res(tokens: int = 10, cost: int = 100, lease: str = "l1", now: int = NOW) -> Reservation:
    return Reservation(tokens, cost, lease, now, now + 60 * NS)


def scope(**limits: int | None) -> ScopeLimits:
    return ScopeLimits(KEY, "k1", **limits)  # type: ignore[arg-type]


def admit(limits: ScopeLimits, state: QuotaState, r: Reservation) -> QuotaState:
    planned = plan_charge(limits, state, r, fresh=True)
    assert isinstance(planned, Charge), planned
    return charged(state, planned)


# --- request bucket (GCRA) ----------------------------------------------------------------


def test_burst_then_refusal_then_refill() -> None:
    limits = scope(requests_per_minute=60, request_burst=5)  # one per second, burst 5
    state = QuotaState()
    for i in range(5):
        state = admit(limits, state, res(lease=f"l{i}"))
    refused = plan_charge(limits, state, res(lease="x"), fresh=True)
    assert isinstance(refused, Refusal)
    assert refused.dimension == RPM
    assert refused.used == 5
    assert refused.retry_after == pytest.approx(1.0)  # one request refills in a second
    later = res(lease="y", now=NOW + NS)
    assert isinstance(plan_charge(limits, state, later, fresh=True), Charge)


def test_bucket_cases_follow_the_state() -> None:
    limits = scope(requests_per_minute=600, request_burst=10)
    idle = plan_charge(limits, QuotaState(request_tat=NOW - 1), res(), fresh=False)
    queued = plan_charge(limits, QuotaState(request_tat=NOW + 1), res(), fresh=False)
    assert isinstance(idle, Charge) and idle.request_case == "idle"
    assert isinstance(queued, Charge) and queued.request_case == "queued"
    assert queued.request_max_tat == NOW + 9 * limits.request_interval


def test_a_stale_state_refuses_only_what_it_proves() -> None:
    limits = scope(requests_per_minute=60, request_burst=1, tokens_per_day=100)
    full_bucket = QuotaState(request_tat=NOW + 10 * NS)
    assert isinstance(plan_charge(limits, full_bucket, res(), fresh=False), Refusal)
    spent_day = QuotaState(day="2026-11-18", day_tokens=100)
    # A refund may have happened since: let the store decide.
    assert isinstance(plan_charge(limits, spent_day, res(), fresh=False), Charge)
    assert isinstance(plan_charge(limits, spent_day, res(), fresh=True), Refusal)
    too_big = res(tokens=101)
    refusal = plan_charge(limits, QuotaState(), too_big, fresh=False)
    assert isinstance(refusal, Refusal) and refusal.permanent


def test_zero_limit_admits_nothing() -> None:
    refusal = plan_charge(scope(requests_per_minute=0), QuotaState(), res(), fresh=True)
    assert isinstance(refusal, Refusal) and refusal.permanent
    error = refusal.error()
    assert isinstance(error, RateLimited) and error.retry_after is None


# --- tokens -------------------------------------------------------------------------------


def test_tokens_per_minute_bucket_and_refund() -> None:
    limits = scope(tokens_per_minute=1000)
    state = admit(limits, QuotaState(), res(tokens=800))
    refused = plan_charge(limits, state, res(tokens=300, lease="b"), fresh=True)
    assert isinstance(refused, Refusal) and refused.dimension == TPM
    assert refused.used == 800
    assert refused.retry_after == pytest.approx(6.0)  # 100 tokens refill in 6 s
    planned = plan_charge(limits, QuotaState(), res(tokens=800), fresh=True)
    assert isinstance(planned, Charge)
    back = refund(hold_of(planned), 200, 0)
    state = refunded(state, back)
    assert isinstance(plan_charge(limits, state, res(tokens=300, lease="b"), fresh=True), Charge)


def test_request_asking_more_than_a_minute_of_tokens_is_permanent() -> None:
    refusal = plan_charge(scope(tokens_per_minute=100), QuotaState(), res(tokens=101), fresh=True)
    assert isinstance(refusal, Refusal) and refusal.permanent
    assert "lower max_tokens" in refusal.error().message


def test_day_window_rolls_over() -> None:
    limits = scope(tokens_per_day=100)
    state = admit(limits, QuotaState(), res(tokens=90))
    assert state.day == "2026-11-18" and state.day_tokens == 90
    refused = plan_charge(limits, state, res(tokens=20), fresh=True)
    assert isinstance(refused, Refusal) and refused.dimension == TPD
    assert refused.reset_at == day_end("2026-11-18")
    tomorrow = res(tokens=20, now=NOW + 86_400 * NS)
    planned = plan_charge(limits, state, tomorrow, fresh=True)
    assert isinstance(planned, Charge) and planned.day_case == "new"
    assert charged(state, planned).day_tokens == 20


def test_a_refund_after_the_window_moved_is_dropped() -> None:
    limits = scope(tokens_per_day=100)
    planned = plan_charge(limits, QuotaState(), res(tokens=50), fresh=True)
    assert isinstance(planned, Charge)
    back = refund(hold_of(planned), 10, 0)
    assert back.day_tokens == -40
    moved = QuotaState(day="2026-11-19", day_tokens=5, leases={"l1": NOW + NS}, leases_held=1)
    narrowed = refund_for(back, moved)
    assert narrowed is not None and narrowed.day_tokens == 0 and narrowed.drop_lease


# --- leases -------------------------------------------------------------------------------


def test_leases_bound_concurrency_and_expired_ones_are_reaped() -> None:
    limits = scope(concurrent_requests=2)
    state = admit(limits, QuotaState(), res(lease="a"))
    state = admit(limits, state, res(lease="b"))
    refused = plan_charge(limits, state, res(lease="c"), fresh=True)
    assert isinstance(refused, Refusal) and refused.dimension == CONCURRENT
    after_expiry = res(lease="c", now=NOW + 61 * NS)
    planned = plan_charge(limits, state, after_expiry, fresh=True)
    assert isinstance(planned, Charge)
    assert {lid for lid, _ in planned.reap} == {"a", "b"}
    assert planned.lease_max_held == 4
    state = charged(state, planned)
    assert state.leases_held == 1 and set(state.leases) == {"c"}


def test_release_needs_its_lease() -> None:
    limits = scope(concurrent_requests=2, tokens_per_day=100)
    planned = plan_charge(limits, QuotaState(), res(tokens=30), fresh=True)
    assert isinstance(planned, Charge)
    state = charged(QuotaState(), planned)
    back = refund(hold_of(planned), 0, 0, release=True)
    assert refund_for(back, state) == back
    state = refunded(state, back)
    assert state.day_tokens == 0 and state.leases_held == 0 and not state.leases
    assert refund_for(back, state) is None  # a second release changes nothing


# --- budget -------------------------------------------------------------------------------


def test_spent_budget_is_insufficient_quota_without_retry_after() -> None:
    limits = scope(monthly_budget_nano=nano_usd(1.0))
    state = admit(limits, QuotaState(), res(cost=nano_usd(0.99)))
    refusal = plan_charge(limits, state, res(cost=nano_usd(0.02), lease="b"), fresh=True)
    assert isinstance(refusal, Refusal) and refusal.dimension == COST
    error = refusal.error()
    assert isinstance(error, QuotaExceeded)
    assert error.retry_after is None
    assert error.details is not None
    assert error.details["used"] == pytest.approx(0.99)
    assert error.details["reset_at"] == month_end("2026-11")
    assert datetime.fromtimestamp(month_end("2026-12"), UTC) == datetime(2027, 1, 1, tzinfo=UTC)


def test_budget_refusal_is_reported_before_rate_limits() -> None:
    limits = scope(requests_per_minute=1, request_burst=1, monthly_budget_nano=10)
    state = QuotaState(request_tat=NOW + MINUTE_NS, month="2026-11", month_cost=10)
    refusal = plan_charge(limits, state, res(cost=1), fresh=True)
    assert isinstance(refusal, Refusal) and refusal.dimension == COST


# --- effective limits ---------------------------------------------------------------------


def test_key_item_tracks_only_what_the_key_narrows() -> None:
    org = Organization("o", tier="standard").effective_limits()
    assert not key_scope_limits("k", None, org).tracked
    wider = key_scope_limits("k", Limits(tokens_per_day=10**12), org)
    assert not wider.tracked
    narrow = key_scope_limits("k", Limits(requests_per_minute=100), org)
    assert narrow.requests_per_minute == 100 and narrow.request_burst == 100
    assert narrow.tokens_per_day is None and narrow.concurrent_requests is None
    burst_only = key_scope_limits("k", Limits(request_burst=5), org)
    assert (burst_only.requests_per_minute, burst_only.request_burst) == (600, 5)


class Orgs:
    def __init__(self) -> None:
        self.calls = 0

    def get_org(self, org_id: str) -> Organization | None:
        self.calls += 1
        return None


class Clock:
    def __init__(self) -> None:
        self.mono = 0.0

    def now(self) -> float:
        return NOW / NS

    def monotonic(self) -> float:
        return self.mono


def test_resolver_caches_orgs_for_a_minute_and_defaults_to_standard() -> None:
    orgs, clock = Orgs(), Clock()
    resolver = LimitResolver(orgs, lambda _: None, clock)
    principal = Principal("k1", "o1", frozenset())
    org, key = resolver.scopes(principal)
    assert org.scope == ORG and org.requests_per_minute == 600 and not key.tracked
    resolver.scopes(principal)
    assert orgs.calls == 1
    clock.mono += 61
    resolver.scopes(principal)
    assert orgs.calls == 2


# --- views and headers --------------------------------------------------------------------


def test_headers_report_the_tightest_limits() -> None:
    limits = ScopeLimits(KEY, "k", requests_per_minute=60, request_burst=10, tokens_per_minute=1000)
    state = QuotaState()
    for i in range(3):
        state = admit(limits, state, res(tokens=300, lease=f"l{i}"))
    headers = rate_limit_headers(limit_views(limits, state, NOW))
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "7"
    assert headers["x-ratelimit-reset-requests"] == "3s"
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-remaining-tokens"] == "100"
    assert headers["x-ratelimit-reset-tokens"] == "54s"
    # tokens: 10% left is tighter than requests' 70%
    assert headers["x-ratelimit-limit"] == "1000"
    assert headers["x-ratelimit-remaining"] == "100"
    assert headers["x-ratelimit-reset"] == "54"


def test_views_of_quotas() -> None:
    limits = scope(tokens_per_day=1000, monthly_budget_nano=nano_usd(2.0), concurrent_requests=4)
    state = admit(limits, QuotaState(), res(tokens=850, cost=nano_usd(1.9)))
    views = {v.dimension: v for v in limit_views(limits, state, NOW)}
    assert views[TPD].percent == 85 and views[TPD].remaining == 150
    assert views[TPD].period == "2026-11-18"
    assert views[COST].percent == 95 and views[COST].used == pytest.approx(1.9)
    assert views[CONCURRENT].used == 1 and views[CONCURRENT].reset_at is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.02, "20ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (360, "6m0s"),
        (61.25, "1m1.25s"),
        (3723, "1h2m3s"),
    ],
)
def test_duration_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
