"""Usage report arithmetic: query validation, buckets, groups, quota warnings (no I/O)."""

from __future__ import annotations

import pytest

from gantry.domain.errors import InvalidRequest
from gantry.domain.limits import COST, KEY, ORG, TPD, LimitView
from gantry.domain.usage import (
    UsageRow,
    aggregate,
    hour_id,
    hour_start,
    parse_query,
    quota_warnings,
    warning_header,
)

DAY = 1_795_046_400  # 2026-11-19T00:00:00Z
NOW = DAY + 10 * 3600 + 5


def row(hour: int, model: str = "m1", key: str = "k1", requests: int = 1) -> UsageRow:
    return UsageRow(hour, key, model, "chat.completions", requests, 10, 5, 1000)


def test_hour_ids_round_trip() -> None:
    assert hour_id(DAY + 3600 * 13 + 59) == "2026-11-19T13"
    assert hour_start("2026-11-19T13") == DAY + 3600 * 13


def test_defaults() -> None:
    query = parse_query(
        start=None, end=None, bucket_width=None, group_by=None, key_id=None, now=NOW
    )
    assert query.bucket_width == "1d" and query.end == NOW
    assert query.start == NOW - 7 * 86_400 and query.group_by == ()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"bucket_width": "2h"}, "bucket_width"),
        ({"group_by": "model,colour"}, "group_by"),
        ({"start": NOW, "end": NOW - 1}, "end"),
        ({"start": NOW - 40 * 86_400, "bucket_width": "1h"}, "start"),
        ({"start": -5}, "start"),
        ({"key_id": "not a key!"}, "key_id"),
    ],
)
def test_bad_queries_name_the_parameter(kwargs: dict[str, object], param: str) -> None:
    base: dict[str, object] = {
        "start": None,
        "end": None,
        "bucket_width": None,
        "group_by": None,
        "key_id": None,
        "now": NOW,
    }
    with pytest.raises(InvalidRequest) as caught:
        parse_query(**{**base, **kwargs})  # type: ignore[arg-type]
    assert caught.value.param == param


def test_daily_buckets_with_groups() -> None:
    query = parse_query(
        start=DAY - 86_400,
        end=DAY + 86_400,
        bucket_width="1d",
        group_by="model, key_id",
        key_id=None,
        now=NOW,
    )
    rows = [
        row(DAY - 3600, "m1"),
        row(DAY + 3600, "m1"),
        row(DAY + 7200, "m1", requests=2),
        row(DAY + 7200, "m2", key="k2"),
        row(DAY + 86_400, "m1"),  # outside the range
    ]
    totals, buckets = aggregate(rows, query)
    assert totals["requests"] == 5
    assert totals["total_tokens"] == 4 * 15
    assert totals["cost_usd"] == pytest.approx(4e-6)
    assert [b["start_time"] for b in buckets] == [DAY - 86_400, DAY]
    first, second = buckets
    assert first["results"] == [
        {
            "model": "m1",
            "key_id": "k1",
            "requests": 1,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "cost_usd": 1e-6,
            "cached_requests": 0,
            "cached_tokens": 0,
        }
    ]
    assert [(r["model"], r["key_id"], r["requests"]) for r in second["results"]] == [
        ("m1", "k1", 3),
        ("m2", "k2", 1),
    ]


def test_hourly_buckets_list_empty_hours() -> None:
    query = parse_query(
        start=DAY, end=DAY + 3 * 3600, bucket_width="1h", group_by=None, key_id=None, now=NOW
    )
    totals, buckets = aggregate([row(DAY + 3600)], query)
    assert totals["requests"] == 1
    assert [len(b["results"]) for b in buckets] == [0, 1, 0]


def view(dimension: str, percent: int, scope: str = KEY) -> LimitView:
    return LimitView(scope, "x", dimension, 100, 100, percent, 100 - percent, 1, 2, "2026-11")  # type: ignore[arg-type]


def test_warnings_from_80_percent() -> None:
    views = [view(TPD, 79), view(COST, 91), view(TPD, 82, ORG), view("tokens_per_minute", 99)]
    warnings = quota_warnings(views)
    assert [(w.dimension, w.scope, w.thresholds) for w in warnings] == [
        (COST, KEY, (80, 90)),
        (TPD, ORG, (80,)),
    ]
    assert warning_header(warnings) == "monthly_cost=91%, tokens_per_day=82%"
    assert warning_header([]) is None
