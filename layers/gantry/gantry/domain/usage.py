"""Usage: what a request really used, the counters it adds to, the usage report (totals,
buckets, breakdowns) and quota warnings (80% and 90% of a daily or monthly quota)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gantry.domain.errors import InvalidRequest
from gantry.domain.limits import COST, TPD, LimitView, ScopeName, usd

BUCKET_SECONDS = {"1h": 3600, "1d": 86_400}
MAX_BUCKETS = {"1h": 24 * 31, "1d": 366}
DEFAULT_SPAN = {"1h": 86_400, "1d": 7 * 86_400}
GROUP_FIELDS = ("model", "endpoint", "key_id")
THRESHOLDS = (80, 90)
QUOTA_DIMENSIONS = (TPD, COST)


def hour_id(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H")


def hour_start(hour: str) -> int:
    return int(datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class UsageRow:
    """One counter: a key's (or organization's) usage of one model and endpoint in one hour."""

    hour: int  # epoch seconds of the hour's start
    key_id: str
    model: str
    endpoint: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int
    cached_requests: int = 0  # of `requests`, those answered from the response cache
    cached_tokens: int = 0


@dataclass
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nano: int = 0
    cached_requests: int = 0
    cached_tokens: int = 0

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.prompt_tokens += row.prompt_tokens
        self.completion_tokens += row.completion_tokens
        self.cost_nano += row.cost_nano
        self.cached_requests += row.cached_requests
        self.cached_tokens += row.cached_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": usd(self.cost_nano),
            "cached_requests": self.cached_requests,
            "cached_tokens": self.cached_tokens,
        }


@dataclass(frozen=True)
class UsageQuery:
    start: int
    end: int
    bucket_width: str
    group_by: tuple[str, ...]
    key_id: str | None

    @property
    def width(self) -> int:
        return BUCKET_SECONDS[self.bucket_width]

    @property
    def first_bucket(self) -> int:
        return self.start - self.start % self.width

    @property
    def first_hour(self) -> int:
        """Counters are hourly: the hours whose start lies in [first bucket, end)."""
        return self.first_bucket

    @property
    def last_hour(self) -> int:
        return (self.end - 1) - (self.end - 1) % 3600


def parse_query(
    *,
    start: int | None,
    end: int | None,
    bucket_width: str | None,
    group_by: str | None,
    key_id: str | None,
    now: float,
) -> UsageQuery:
    """Validate the query of GET /v1/usage; every refusal names the parameter."""
    width = bucket_width or "1d"
    if width not in BUCKET_SECONDS:
        raise InvalidRequest(
            f"Invalid value for 'bucket_width': {width!r}. Use '1h' or '1d'.",
            code="invalid_value",
            param="bucket_width",
        )
    stop = math.ceil(now) if end is None else end
    begin = stop - DEFAULT_SPAN[width] if start is None else start
    for name, value in (("start", begin), ("end", stop)):
        if value < 0 or value > 10**11:
            raise InvalidRequest(
                f"Invalid value for '{name}': {value}. Use unix seconds.",
                code="invalid_value",
                param=name,
            )
    if stop <= begin:
        raise InvalidRequest(
            f"'end' ({stop}) must be later than 'start' ({begin}).",
            code="invalid_value",
            param="end",
        )
    seconds = BUCKET_SECONDS[width]
    buckets = math.ceil((stop - (begin - begin % seconds)) / seconds)
    if buckets > MAX_BUCKETS[width]:
        raise InvalidRequest(
            f"The range from 'start' to 'end' spans {buckets} buckets of {width}; at most "
            f"{MAX_BUCKETS[width]} are allowed. Move 'start' later or use a wider bucket_width.",
            code="invalid_value",
            param="start",
        )
    groups: list[str] = []
    for part in (group_by or "").split(","):
        name = part.strip()
        if not name:
            continue
        if name not in GROUP_FIELDS:
            raise InvalidRequest(
                f"Invalid value for 'group_by': {name!r}. Use a comma-separated list of "
                f"{', '.join(GROUP_FIELDS)}.",
                code="invalid_value",
                param="group_by",
            )
        if name not in groups:
            groups.append(name)
    if key_id is not None and not (4 <= len(key_id) <= 40 and key_id.isalnum()):
        raise InvalidRequest(
            "Invalid value for 'key_id': a key id is 4 to 40 letters or digits (the part "
            "between 'gnt_' and the secret).",
            code="invalid_value",
            param="key_id",
        )
    return UsageQuery(begin, stop, width, tuple(groups), key_id)


def aggregate(
    rows: Iterable[UsageRow], query: UsageQuery
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(totals, buckets) over the rows inside the query's range. Every bucket of the range is
    listed; its `results` hold one entry per group (one entry without group_by), none when
    the bucket saw no usage."""
    width = query.width
    totals = Totals()
    groups: dict[int, dict[tuple[str, ...], Totals]] = {}
    for row in rows:
        if not query.first_hour <= row.hour <= query.last_hour:
            continue
        totals.add(row)
        bucket = row.hour - row.hour % width
        group = tuple(getattr(row, name) for name in query.group_by)
        groups.setdefault(bucket, {}).setdefault(group, Totals()).add(row)
    buckets: list[dict[str, Any]] = []
    start = query.first_bucket
    while start < query.end:
        results = []
        for group, sums in sorted(groups.get(start, {}).items()):
            entry: dict[str, Any] = dict(zip(query.group_by, group, strict=True))
            entry.update(sums.as_dict())
            results.append(entry)
        buckets.append(
            {"object": "bucket", "start_time": start, "end_time": start + width, "results": results}
        )
        start += width
    return totals.as_dict(), buckets


# --- quota warnings ------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaWarning:
    """A daily or monthly quota at or above a threshold."""

    scope: ScopeName
    scope_id: str
    dimension: str
    percent: int
    period: str
    limit: float
    used: float

    @property
    def thresholds(self) -> tuple[int, ...]:
        """Every threshold this usage has reached (80, or 80 and 90)."""
        return tuple(t for t in THRESHOLDS if self.percent >= t)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "dimension": self.dimension,
            "percent": self.percent,
            "threshold": self.thresholds[-1],
            "period": self.period,
            "limit": self.limit,
            "used": self.used,
            "message": (
                f"{self.percent}% of the {self.scope}'s {self.dimension} quota for "
                f"{self.period} is used."
            ),
        }


def quota_warnings(views: Sequence[LimitView]) -> list[QuotaWarning]:
    return [
        QuotaWarning(v.scope, v.scope_id, v.dimension, v.percent, v.period, v.limit, v.used)
        for v in views
        if v.dimension in QUOTA_DIMENSIONS and v.period and v.percent >= THRESHOLDS[0]
    ]


def warning_header(warnings: Sequence[QuotaWarning]) -> str | None:
    """`X-Quota-Warning`: each quota past 80% once, at the highest percent of its scopes,
    e.g. `tokens_per_day=82%, monthly_cost=91%`."""
    highest: dict[str, int] = {}
    for warning in warnings:
        highest[warning.dimension] = max(highest.get(warning.dimension, 0), warning.percent)
    if not highest:
        return None
    return ", ".join(f"{dimension}={percent}%" for dimension, percent in highest.items())


def threshold_event(warning: QuotaWarning, threshold: int, org_id: str) -> Mapping[str, Any]:
    """The `quota.threshold_crossed` event payload for webhook delivery."""
    return {
        "type": "quota.threshold_crossed",
        "org_id": org_id,
        "scope": warning.scope,
        "scope_id": warning.scope_id,
        "dimension": warning.dimension,
        "threshold": threshold,
        "percent": warning.percent,
        "period": warning.period,
        "limit": warning.limit,
        "used": warning.used,
    }
