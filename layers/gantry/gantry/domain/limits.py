"""Limits: what a key and its organization may use, and the exact arithmetic of admitting a
request against them.

Each scope keeps every dimension it enforces in one quota item (`QuotaState`):

- requests_per_minute: GCRA, a token bucket kept as a "theoretical arrival time" (`tat`).
  Each request moves `tat` by `interval = 60 s / rpm`; a request fits while
  `max(tat, now) + interval - now <= burst * interval`.
- tokens_per_minute: the same per token, `interval = 60 s / tpm`, capacity one minute.
- tokens_per_day, monthly_cost: counters in a UTC day / UTC month window.
- concurrent_requests: a count of leases, each with an expiry, so a request whose function
  died frees its slot when the lease expires (expired leases are reaped by a later write).

Times are integer nanoseconds since the epoch and money integer nano-dollars, so the
conditions the store evaluates and the arithmetic here agree exactly.

An admission is planned from the item state a process last saw: the plan picks, per
dimension, the case that state implies (bucket idle or queued, window current or new) and
the store's condition re-checks both the case and the bound. A stale guess fails the
condition; the store then returns the real state and the plan is made again. Only a state
just returned by the store (`fresh`) can refuse a request, except the request bucket, whose
`tat` never decreases, so any earlier view of it is a safe lower bound.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Literal, Protocol

from gantry.domain.errors import GantryError, QuotaExceeded, RateLimited
from gantry.domain.keys import KeyRecord, Principal
from gantry.domain.orgs import Limits, Organization

NS = 1_000_000_000
MINUTE_NS = 60 * NS
NANO_USD = 1_000_000_000

RPM = "requests_per_minute"
TPM = "tokens_per_minute"
TPD = "tokens_per_day"
CONCURRENT = "concurrent_requests"
COST = "monthly_cost"
DIMENSIONS = (RPM, TPM, TPD, CONCURRENT, COST)

ScopeName = Literal["key", "organization"]
KEY: ScopeName = "key"
ORG: ScopeName = "organization"

BucketCase = Literal["idle", "queued"]
WindowCase = Literal["same", "new"]

MAX_REAP = 10  # expired leases removed by one write
REAP_EAGERLY = 4  # reap even when not at the limit once this many have expired

_LABELS = {
    RPM: "requests per minute",
    TPM: "tokens per minute",
    TPD: "tokens per day",
    CONCURRENT: "concurrent requests",
    COST: "monthly budget",
}


# --- units and windows ---------------------------------------------------------------------


def to_ns(seconds: float) -> int:
    return int(Decimal(repr(seconds)) * NS)


def nano_usd(usd: float, *, round_up: bool = False) -> int:
    value = Decimal(repr(usd)) * NANO_USD
    return int(value.to_integral_value(ROUND_CEILING if round_up else ROUND_HALF_UP))


def usd(nano: int) -> float:
    return round(nano / NANO_USD, 9)


def day_window(now_ns: int) -> str:
    return datetime.fromtimestamp(now_ns // NS, UTC).strftime("%Y-%m-%d")


def month_window(now_ns: int) -> str:
    return datetime.fromtimestamp(now_ns // NS, UTC).strftime("%Y-%m")


def day_end(day: str) -> float:
    """Epoch seconds of the midnight (UTC) that ends this day."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return start.timestamp() + 86_400


def month_end(month: str) -> float:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    year, number = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return datetime(year, number, 1, tzinfo=UTC).timestamp()


def lease_id(admission_id: str) -> str:
    """A short attribute-safe id for an admission's lease (12 hex characters)."""
    seed = admission_id or secrets.token_hex(8)
    return hashlib.blake2b(seed.encode(), digest_size=6).hexdigest()


# --- limits per scope ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeLimits:
    """The dimensions one quota item enforces; None means not enforced by this item."""

    scope: ScopeName
    scope_id: str
    requests_per_minute: int | None = None
    request_burst: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    concurrent_requests: int | None = None
    monthly_budget_nano: int | None = None

    @property
    def pk(self) -> str:
        return f"{'KEY' if self.scope == KEY else 'ORG'}#{self.scope_id}"

    @property
    def tracked(self) -> bool:
        return any(
            value is not None
            for value in (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.tokens_per_day,
                self.concurrent_requests,
                self.monthly_budget_nano,
            )
        )

    @property
    def burst(self) -> int:
        if self.requests_per_minute is None:
            return 0
        return self.requests_per_minute if self.request_burst is None else self.request_burst

    @property
    def request_interval(self) -> int:
        """Nanoseconds each request occupies in the bucket (rounded up: never admits more)."""
        rpm = self.requests_per_minute
        return -(-MINUTE_NS // rpm) if rpm else 0

    @property
    def token_interval(self) -> int:
        tpm = self.tokens_per_minute
        return -(-MINUTE_NS // tpm) if tpm else 0

    @classmethod
    def of(cls, scope: ScopeName, scope_id: str, limits: Limits) -> ScopeLimits:
        budget = limits.monthly_budget_usd
        return cls(
            scope,
            scope_id,
            requests_per_minute=limits.requests_per_minute,
            request_burst=limits.request_burst if limits.requests_per_minute is not None else None,
            tokens_per_minute=limits.tokens_per_minute,
            tokens_per_day=limits.tokens_per_day,
            concurrent_requests=limits.concurrent_requests,
            monthly_budget_nano=None if budget is None else nano_usd(budget),
        )


def key_scope_limits(key_id: str, own: Limits | None, org: Limits) -> ScopeLimits:
    """The key's item enforces only the dimensions where the key is tighter than its
    organization: elsewhere the organization's item already bounds it (a key's usage is part
    of its organization's, so whatever fits the organization fits such a key)."""
    if own is None:
        return ScopeLimits(KEY, key_id)
    effective = org.narrowed_by(own)

    def tighter(name: str) -> bool:
        mine, theirs = getattr(effective, name), getattr(org, name)
        return mine is not None and (theirs is None or mine < theirs)

    bucket = tighter("requests_per_minute") or tighter("request_burst")
    narrowed = Limits(
        requests_per_minute=effective.requests_per_minute if bucket else None,
        request_burst=effective.request_burst if bucket else None,
        tokens_per_minute=effective.tokens_per_minute if tighter("tokens_per_minute") else None,
        tokens_per_day=effective.tokens_per_day if tighter("tokens_per_day") else None,
        concurrent_requests=(
            effective.concurrent_requests if tighter("concurrent_requests") else None
        ),
        monthly_budget_usd=(
            effective.monthly_budget_usd if tighter("monthly_budget_usd") else None
        ),
    )
    return ScopeLimits.of(KEY, key_id, narrowed)


class OrgSource(Protocol):
    def get_org(self, org_id: str) -> Organization | None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class LimitResolver:
    """Effective limits per caller. Organization records are cached in-process for at most
    `ttl_seconds` (a missing record means the standard tier); key records come from the
    authenticator's cache, which the request has just filled."""

    def __init__(
        self,
        orgs: OrgSource,
        key_record: Callable[[str], KeyRecord | None],
        clock: Clock,
        ttl_seconds: float = 60.0,
    ) -> None:
        self._orgs = orgs
        self._key_record = key_record
        self._clock = clock
        self._ttl = min(ttl_seconds, 60.0)
        self._cache: dict[str, tuple[float, Organization]] = {}
        self._lock = threading.Lock()

    def organization(self, org_id: str) -> Organization:
        entry = self._cache.get(org_id)
        if entry is not None and self._clock.monotonic() - entry[0] <= self._ttl:
            return entry[1]
        org = self._orgs.get_org(org_id) or Organization(org_id)
        with self._lock:
            self._cache[org_id] = (self._clock.monotonic(), org)
        return org

    def forget(self, org_id: str) -> None:
        with self._lock:
            self._cache.pop(org_id, None)

    def scopes(
        self, principal: Principal, key: KeyRecord | None = None
    ) -> tuple[ScopeLimits, ScopeLimits]:
        """(organization, key) limits for this caller (or for `key`, a key of its org)."""
        org_limits = self.organization(principal.org_id).effective_limits()
        record = key if key is not None else self._key_record(principal.key_id)
        key_id = record.key_id if record is not None else principal.key_id
        own = record.limits if record is not None else None
        return (
            ScopeLimits.of(ORG, principal.org_id, org_limits),
            key_scope_limits(key_id, own, org_limits),
        )


# --- item state, reservations and charges --------------------------------------------------


@dataclass(frozen=True)
class QuotaState:
    """One scope's quota item. Absent attributes read as zero / empty."""

    request_tat: int = 0
    token_tat: int = 0
    day: str = ""
    day_tokens: int = 0
    month: str = ""
    month_cost: int = 0
    leases_held: int = 0
    leases: Mapping[str, int] = field(default_factory=dict)  # lease id -> expiry (ns)


@dataclass(frozen=True)
class Reservation:
    """What one request asks of every scope."""

    tokens: int
    cost: int  # nano-USD, rounded up
    lease_id: str
    now: int  # ns
    lease_expiry: int  # ns

    @property
    def day(self) -> str:
        return day_window(self.now)

    @property
    def month(self) -> str:
        return month_window(self.now)


@dataclass(frozen=True)
class Charge:
    """One admission's write to one scope's item: the case it expects each dimension to be
    in, and the bounds its condition enforces."""

    limits: ScopeLimits
    reservation: Reservation
    request_case: BucketCase | None
    token_case: BucketCase | None
    day: str
    day_case: WindowCase | None
    month: str
    month_case: WindowCase | None
    reap: tuple[tuple[str, int], ...] = ()

    @property
    def request_step(self) -> int:
        return self.limits.request_interval

    @property
    def request_max_tat(self) -> int:
        """A queued request fits while tat is at most this."""
        return self.reservation.now + (self.limits.burst - 1) * self.limits.request_interval

    @property
    def token_step(self) -> int:
        return self.reservation.tokens * self.limits.token_interval

    @property
    def token_max_tat(self) -> int:
        return self.reservation.now + MINUTE_NS - self.token_step

    @property
    def day_max_used(self) -> int | None:
        limit = self.limits.tokens_per_day
        return None if limit is None else limit - self.reservation.tokens

    @property
    def month_max_used(self) -> int | None:
        budget = self.limits.monthly_budget_nano
        return None if budget is None else budget - self.reservation.cost

    @property
    def lease_max_held(self) -> int | None:
        """The item's lease count must be below this (expired leases reaped here excluded)."""
        limit = self.limits.concurrent_requests
        return None if limit is None else limit + len(self.reap)


@dataclass(frozen=True)
class Refusal:
    limits: ScopeLimits
    dimension: str
    limit: float
    used: float
    requested: float
    reset_at: float | None
    retry_after: float | None
    permanent: bool = False  # the request can never fit (it asks more than the limit)

    def error(self) -> GantryError:
        scope = "organization" if self.limits.scope == ORG else "key"
        details = {
            "dimension": self.dimension,
            "scope": self.limits.scope,
            "limit": self.limit,
            "used": self.used,
            "requested": self.requested,
            "reset_at": self.reset_at,
        }
        if self.dimension == COST:
            return QuotaExceeded(
                f"You exceeded the monthly budget of ${self.limit:g} for this {scope}: "
                f"${self.used:g} is spent and this request may cost up to "
                f"${self.requested:g}. Raise the budget, lower max_tokens, or wait for the "
                "budget to reset at the start of the next UTC month.",
                details=details,
            )
        label = _LABELS[self.dimension]
        if self.permanent:
            advice = (
                "This request asks for more than the limit allows; lower max_tokens or split "
                "the input."
                if self.dimension in (TPM, TPD)
                else "This limit admits no requests; ask an administrator to raise it."
            )
        elif self.retry_after is not None:
            advice = f"Please try again in {format_duration(self.retry_after)}."
        else:
            advice = "Please try again shortly."
        return RateLimited(
            f"Rate limit reached for {label} on this {scope}: limit {self.limit:g}, used "
            f"{self.used:g}, requested {self.requested:g}. {advice}",
            details=details,
            retry_after=None if self.permanent else self.retry_after,
        )


def _live_leases(state: QuotaState, now: int) -> int:
    return sum(1 for expiry in state.leases.values() if expiry > now)


def _expired(state: QuotaState, now: int) -> list[tuple[str, int]]:
    return sorted(
        ((lid, expiry) for lid, expiry in state.leases.items() if expiry <= now),
        key=lambda pair: pair[1],
    )


def refusals(limits: ScopeLimits, state: QuotaState, res: Reservation) -> list[Refusal]:
    """Every dimension of this scope that `state` says the reservation does not fit."""
    out: list[Refusal] = []
    now = res.now
    now_s = now / NS
    rpm = limits.requests_per_minute
    if rpm is not None:
        interval, burst = limits.request_interval, limits.burst
        if rpm <= 0 or burst <= 0:
            out.append(Refusal(limits, RPM, rpm, 0, 1, None, None, permanent=True))
        elif state.request_tat > now + (burst - 1) * interval:
            wait = (state.request_tat - (burst - 1) * interval - now) / NS
            used = min(burst, -(-(state.request_tat - now) // interval))
            out.append(Refusal(limits, RPM, rpm, used, 1, round(now_s + wait, 3), wait))
    tpm = limits.tokens_per_minute
    if tpm is not None and res.tokens > 0:
        step = res.tokens * limits.token_interval
        if tpm <= 0 or step > MINUTE_NS:
            out.append(Refusal(limits, TPM, tpm, 0, res.tokens, None, None, permanent=True))
        elif state.token_tat > now + MINUTE_NS - step:
            wait = (state.token_tat + step - MINUTE_NS - now) / NS
            used = min(tpm, -(-(state.token_tat - now) // limits.token_interval))
            out.append(Refusal(limits, TPM, tpm, used, res.tokens, round(now_s + wait, 3), wait))
    tpd = limits.tokens_per_day
    if tpd is not None:
        day = max(res.day, state.day)
        used = state.day_tokens if state.day == day else 0
        if res.tokens > tpd:
            out.append(Refusal(limits, TPD, tpd, used, res.tokens, None, None, permanent=True))
        elif used + res.tokens > tpd:
            reset = day_end(day)
            out.append(Refusal(limits, TPD, tpd, used, res.tokens, reset, max(0.0, reset - now_s)))
    concurrent = limits.concurrent_requests
    if concurrent is not None:
        reapable = min(MAX_REAP, len(_expired(state, now)))
        if concurrent <= 0:
            out.append(Refusal(limits, CONCURRENT, concurrent, 0, 1, None, None, permanent=True))
        elif state.leases_held - reapable >= concurrent:
            used = _live_leases(state, now)
            out.append(Refusal(limits, CONCURRENT, concurrent, used, 1, None, 1.0))
    budget = limits.monthly_budget_nano
    if budget is not None:
        month = max(res.month, state.month)
        spent = state.month_cost if state.month == month else 0
        if spent + res.cost > budget:
            out.append(
                Refusal(
                    limits,
                    COST,
                    usd(budget),
                    usd(spent),
                    usd(res.cost),
                    month_end(month),
                    None,
                    permanent=res.cost > budget,
                )
            )
    return out


def _worst(found: Sequence[Refusal]) -> Refusal:
    """The refusal to report: a spent budget first (waiting will not help), then the one
    that takes longest to clear."""
    for refusal in found:
        if refusal.dimension == COST:
            return refusal
    return max(found, key=lambda r: math.inf if r.retry_after is None else r.retry_after)


def plan_charge(
    limits: ScopeLimits, state: QuotaState, res: Reservation, *, fresh: bool
) -> Charge | Refusal:
    """The write that admits `res` on this scope if `state` is current, or the refusal.

    A state that is not `fresh` (just returned by the store) only refuses what it proves:
    a request that can never fit, or a full request bucket (its tat only grows)."""
    found = refusals(limits, state, res)
    trusted = found if fresh else [r for r in found if r.permanent or r.dimension == RPM]
    if trusted:
        return _worst(trusted)
    day, month = max(res.day, state.day), max(res.month, state.month)
    expired = _expired(state, res.now)
    at_limit = (
        limits.concurrent_requests is not None and state.leases_held >= limits.concurrent_requests
    )
    reap = tuple(expired[:MAX_REAP]) if at_limit or len(expired) >= REAP_EAGERLY else ()

    def bucket(limit: int | None, tat: int) -> BucketCase | None:
        if limit is None:
            return None
        return "idle" if tat <= res.now else "queued"

    return Charge(
        limits,
        res,
        request_case=bucket(limits.requests_per_minute, state.request_tat),
        token_case=bucket(limits.tokens_per_minute, state.token_tat),
        day=day,
        day_case=None if limits.tokens_per_day is None else ("same" if state.day == day else "new"),
        month=month,
        month_case=None
        if limits.monthly_budget_nano is None
        else ("same" if state.month == month else "new"),
        reap=reap,
    )


def charged(state: QuotaState, charge: Charge) -> QuotaState:
    """The item after `charge` (exact when `state` was current, else a lower bound)."""
    res = charge.reservation
    out = state
    if charge.request_case == "idle":
        out = replace(out, request_tat=res.now + charge.request_step)
    elif charge.request_case == "queued":
        out = replace(out, request_tat=out.request_tat + charge.request_step)
    if charge.token_case == "idle":
        out = replace(out, token_tat=res.now + charge.token_step)
    elif charge.token_case == "queued":
        out = replace(out, token_tat=out.token_tat + charge.token_step)
    if charge.day_case == "new":
        out = replace(out, day=charge.day, day_tokens=res.tokens)
    elif charge.day_case == "same":
        out = replace(out, day_tokens=out.day_tokens + res.tokens)
    if charge.month_case == "new":
        out = replace(out, month=charge.month, month_cost=res.cost)
    elif charge.month_case == "same":
        out = replace(out, month_cost=out.month_cost + res.cost)
    leases = {k: v for k, v in out.leases.items() if k not in dict(charge.reap)}
    leases[res.lease_id] = res.lease_expiry
    return replace(out, leases=leases, leases_held=out.leases_held + 1 - len(charge.reap))


# --- holds, settlement and release ---------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """What an admission holds on one scope's item until it is settled or released."""

    pk: str
    tokens: int
    cost: int
    token_interval: int  # 0 when the item does not track tokens per minute
    day: str | None  # the day window charged, when tokens per day are tracked
    month: str | None
    lease_id: str


def hold_of(charge: Charge) -> Hold:
    return Hold(
        pk=charge.limits.pk,
        tokens=charge.reservation.tokens,
        cost=charge.reservation.cost,
        token_interval=charge.limits.token_interval if charge.token_case else 0,
        day=charge.day if charge.day_case else None,
        month=charge.month if charge.month_case else None,
        lease_id=charge.reservation.lease_id,
    )


@dataclass(frozen=True)
class Refund:
    """Deltas to ADD to one item when a request ends, and what the write requires."""

    hold: Hold
    token_tat: int = 0
    day_tokens: int = 0
    month_cost: int = 0
    drop_lease: bool = True
    require_lease: bool = False  # a release is only safe while its lease still exists

    @property
    def empty(self) -> bool:
        return not (self.token_tat or self.day_tokens or self.month_cost or self.drop_lease)


def refund(hold: Hold, tokens: int, cost: int, *, release: bool = False) -> Refund:
    """Return what was reserved beyond the real usage (all of it for a release). A negative
    delta charges usage beyond the reservation (a provider that reported more)."""
    back_tokens = hold.tokens - tokens
    back_cost = hold.cost - cost
    return Refund(
        hold,
        token_tat=-back_tokens * hold.token_interval,
        day_tokens=-back_tokens if hold.day is not None else 0,
        month_cost=-back_cost if hold.month is not None else 0,
        drop_lease=True,
        require_lease=release,
    )


def refund_for(refund_: Refund, state: QuotaState) -> Refund | None:
    """What of `refund_` still applies to the item as it is now: nothing for a release whose
    lease is gone (it was released already, or reaped); no window refund once the window
    has moved on; no lease drop once the lease was reaped."""
    hold = refund_.hold
    has_lease = hold.lease_id in state.leases
    if refund_.require_lease and not has_lease:
        return None
    narrowed = replace(
        refund_,
        day_tokens=refund_.day_tokens if state.day == hold.day else 0,
        month_cost=refund_.month_cost if state.month == hold.month else 0,
        drop_lease=refund_.drop_lease and has_lease,
    )
    return None if narrowed.empty else narrowed


def refunded(state: QuotaState, refund_: Refund) -> QuotaState:
    leases = dict(state.leases)
    held = state.leases_held
    if refund_.drop_lease and leases.pop(refund_.hold.lease_id, None) is not None:
        held -= 1
    return replace(
        state,
        token_tat=state.token_tat + refund_.token_tat,
        day_tokens=state.day_tokens + refund_.day_tokens,
        month_cost=state.month_cost + refund_.month_cost,
        leases=leases,
        leases_held=held,
    )


# --- views and headers ---------------------------------------------------------------------


@dataclass(frozen=True)
class LimitView:
    """One enforced limit as a caller sees it."""

    scope: ScopeName
    scope_id: str
    dimension: str
    limit: float
    capacity: float  # what `used` is measured against (the burst for requests per minute)
    used: float
    remaining: float
    reset_after: float | None  # seconds until the limit is fully available again
    reset_at: float | None  # epoch seconds of that moment
    period: str | None = None  # the day or month window of a quota

    @property
    def percent(self) -> int:
        if self.capacity <= 0:
            return 100
        return min(100, max(0, math.floor(self.used * 100 / self.capacity)))


def limit_views(limits: ScopeLimits, state: QuotaState, now: int) -> list[LimitView]:
    out: list[LimitView] = []
    now_s = now / NS

    def view(
        dimension: str,
        limit: float,
        capacity: float,
        used: float,
        reset_after: float | None,
        period: str | None = None,
    ) -> None:
        used = max(0.0, min(float(capacity), float(used))) if capacity > 0 else float(used)
        out.append(
            LimitView(
                limits.scope,
                limits.scope_id,
                dimension,
                limit,
                capacity,
                used,
                max(0.0, capacity - used),
                reset_after,
                None if reset_after is None else round(now_s + reset_after, 3),
                period,
            )
        )

    if limits.requests_per_minute is not None:
        ahead = max(0, state.request_tat - now)
        interval = limits.request_interval
        used = -(-ahead // interval) if interval else limits.burst
        view(RPM, limits.requests_per_minute, limits.burst, used, ahead / NS)
    if limits.tokens_per_minute is not None:
        ahead = max(0, state.token_tat - now)
        interval = limits.token_interval
        used = -(-ahead // interval) if interval else limits.tokens_per_minute
        view(TPM, limits.tokens_per_minute, limits.tokens_per_minute, used, ahead / NS)
    if limits.tokens_per_day is not None:
        day = max(day_window(now), state.day)
        used = state.day_tokens if state.day == day else 0
        view(TPD, limits.tokens_per_day, limits.tokens_per_day, used, day_end(day) - now_s, day)
    if limits.concurrent_requests is not None:
        limit = limits.concurrent_requests
        view(CONCURRENT, limit, limit, _live_leases(state, now), None)
    if limits.monthly_budget_nano is not None:
        month = max(month_window(now), state.month)
        spent = state.month_cost if state.month == month else 0
        budget = usd(limits.monthly_budget_nano)
        view(COST, budget, budget, usd(spent), month_end(month) - now_s, month)
    return out


def format_duration(seconds: float) -> str:
    """A duration as OpenAI's rate-limit headers write it: "20ms", "1s", "6m0s", "1h2m3.5s"."""
    millis = max(0, math.ceil(seconds * 1000 - 1e-6))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}".rstrip("0")


def _tightest(views: Sequence[LimitView]) -> LimitView | None:
    def share(view: LimitView) -> float:
        return view.remaining / view.capacity if view.capacity > 0 else 0.0

    return min(views, key=share) if views else None


def rate_limit_headers(views: Sequence[LimitView]) -> dict[str, str]:
    """`X-RateLimit-*` for the tightest limit (by remaining share), and OpenAI's
    `x-ratelimit-*-requests` / `-tokens` for the tightest scope of each."""
    headers: dict[str, str] = {}
    rated = [v for v in views if v.dimension != CONCURRENT and v.reset_after is not None]
    tightest = _tightest(rated)
    if tightest is not None:
        headers["x-ratelimit-limit"] = _number(tightest.limit)
        headers["x-ratelimit-remaining"] = _number(tightest.remaining)
        headers["x-ratelimit-reset"] = str(math.ceil((tightest.reset_after or 0) - 1e-9))
    for dimension, suffix in ((RPM, "requests"), (TPM, "tokens")):
        chosen = _tightest([v for v in views if v.dimension == dimension])
        if chosen is None:
            continue
        headers[f"x-ratelimit-limit-{suffix}"] = _number(chosen.limit)
        headers[f"x-ratelimit-remaining-{suffix}"] = _number(chosen.remaining)
        headers[f"x-ratelimit-reset-{suffix}"] = format_duration(chosen.reset_after or 0.0)
    return headers
