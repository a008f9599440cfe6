"""Tiers and limits: an organization overrides its tier; a key only narrows."""

from __future__ import annotations

import pytest

from gantry.domain.errors import InvalidRequest
from gantry.domain.orgs import TIERS, Limits, Organization


def test_key_limits_narrow_never_widen() -> None:
    org = Limits(requests_per_minute=100, tokens_per_day=1000)
    key = Limits(requests_per_minute=500, tokens_per_day=10, concurrent_requests=2)
    effective = org.narrowed_by(key)
    assert effective.requests_per_minute == 100
    assert effective.tokens_per_day == 10
    assert effective.concurrent_requests == 2
    assert org.widened_by(key) == ["requests_per_minute"]
    assert org.narrowed_by(None) == org


def test_org_overrides_replace_tier_defaults() -> None:
    org = Organization("o", tier="free", limits=Limits(requests_per_minute=1000))
    limits = org.effective_limits()
    assert limits.requests_per_minute == 1000
    assert limits.tokens_per_day == TIERS["free"].tokens_per_day
    assert Organization("o", tier="custom").effective_limits() == Limits()


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ({"requests_per_minute": -1}, "limits.requests_per_minute"),
        ({"requests_per_minute": 1.5}, "limits.requests_per_minute"),
        ({"tokens_per_day": 10**13}, "limits.tokens_per_day"),
        ({"tokens_per_day": True}, "limits.tokens_per_day"),
        ({"bananas": 1}, "limits.bananas"),
    ],
)
def test_bad_limits_are_refused(raw: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        Limits.from_dict(raw)
    assert caught.value.param == param


def test_budget_accepts_numbers() -> None:
    assert Limits.from_dict({"monthly_budget_usd": 12}).monthly_budget_usd == 12.0
