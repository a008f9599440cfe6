"""Organizations, tiers and limits. A tier sets an organization's default limits; an
organization's own overrides replace them; a key may only narrow what its organization has."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from gantry.domain.errors import InvalidRequest

DIMENSIONS = (
    "requests_per_minute",
    "request_burst",
    "tokens_per_minute",
    "tokens_per_day",
    "concurrent_requests",
    "monthly_budget_usd",
)


@dataclass(frozen=True)
class Limits:
    """None means "no limit of its own" (inherit, or unlimited at the top)."""

    requests_per_minute: int | None = None
    request_burst: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    concurrent_requests: int | None = None
    monthly_budget_usd: float | None = None

    def overridden_by(self, other: Limits) -> Limits:
        """These limits with every dimension `other` sets replaced (operators, per org)."""
        changes = {f.name: getattr(other, f.name) for f in fields(other)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def narrowed_by(self, other: Limits | None) -> Limits:
        """The tighter of the two in every dimension (a key inside its organization)."""
        if other is None:
            return self
        merged: dict[str, Any] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            merged[f.name] = (
                mine if theirs is None else theirs if mine is None else min(mine, theirs)
            )
        return Limits(**merged)

    def widened_by(self, other: Limits) -> list[str]:
        """Dimensions where `other` would allow more than these limits do."""
        wider = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is not None and (theirs is None or theirs > mine):
                wider.append(f.name)
        return wider

    def as_dict(self) -> dict[str, int | float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, param: str = "limits") -> Limits:
        raw = raw or {}
        unknown = sorted(set(raw) - set(DIMENSIONS))
        if unknown:
            raise InvalidRequest(
                f"Unknown limit(s) {', '.join(unknown)}. Valid: {', '.join(DIMENSIONS)}.",
                code="invalid_value",
                param=f"{param}.{unknown[0]}",
            )
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if value is None:
                continue
            kind = float if name == "monthly_budget_usd" else int
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (kind is int and not isinstance(value, int))
            ):
                raise InvalidRequest(
                    f"'{param}.{name}' must be a {'number' if kind is float else 'whole number'}.",
                    code="invalid_type",
                    param=f"{param}.{name}",
                )
            if value < 0 or value > 10**12:
                raise InvalidRequest(
                    f"'{param}.{name}' must be between 0 and 1e12, got {value}.",
                    code="invalid_value",
                    param=f"{param}.{name}",
                )
            values[name] = kind(value)
        return cls(**values)


TIERS: dict[str, Limits] = {
    "free": Limits(
        requests_per_minute=60,
        request_burst=20,
        tokens_per_minute=40_000,
        tokens_per_day=500_000,
        concurrent_requests=4,
        monthly_budget_usd=5.0,
    ),
    "standard": Limits(
        requests_per_minute=600,
        request_burst=100,
        tokens_per_minute=400_000,
        tokens_per_day=20_000_000,
        concurrent_requests=32,
        monthly_budget_usd=500.0,
    ),
    "enterprise": Limits(
        requests_per_minute=6_000,
        request_burst=1_000,
        tokens_per_minute=4_000_000,
        tokens_per_day=500_000_000,
        concurrent_requests=256,
        monthly_budget_usd=50_000.0,
    ),
    # A custom tier starts unlimited: the operator sets every limit on the organization.
    "custom": Limits(),
}


@dataclass(frozen=True)
class Organization:
    org_id: str
    name: str = ""
    tier: str = "standard"
    limits: Limits = Limits()  # operator overrides on top of the tier's defaults
    created_at: float = 0.0

    def effective_limits(self) -> Limits:
        return TIERS.get(self.tier, Limits()).overridden_by(self.limits)
