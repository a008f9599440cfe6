"""Lifecycle rules: the route table matches templates, sunset starts at 00:00 UTC, and the
projection helpers walk documented response schemas."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gantry.domain.errors import Gone
from gantry.domain.lifecycle import RouteTable, midnight
from gantry.http.projection import known, parse_fields, project, without_nulls
from gantry.http.schemas.chat import ChatCompletion
from gantry.http.schemas.tasks import Moderation

TABLE = RouteTable.from_dict(
    {
        "routes": [
            {
                "method": "post",
                "path": "/v1/things/{id}/cancel",
                "deprecation_date": "2027-01-01",
                "sunset_date": "2027-07-01",
                "successor": "/v2/things/{id}/cancel",
            }
        ]
    }
)


def test_route_templates_match_one_segment_per_parameter() -> None:
    assert TABLE.find("POST", "/v1/things/abc/cancel") is not None
    assert TABLE.find("GET", "/v1/things/abc/cancel") is None
    assert TABLE.find("POST", "/v1/things/a/b/cancel") is None
    entry = TABLE.find("post", "/v1/things/x/cancel")
    assert entry is not None
    assert entry.lifecycle.guide == "/docs/versioning#route-post-v1-things-id-cancel"


def test_retirement_starts_at_midnight_utc() -> None:
    entry = TABLE.find("POST", "/v1/things/x/cancel")
    assert entry is not None
    sunset = datetime(2027, 7, 1, tzinfo=UTC).timestamp()
    assert midnight(entry.lifecycle.sunset_on) == sunset  # type: ignore[arg-type]
    assert not entry.lifecycle.retired(sunset - 1)
    assert entry.lifecycle.retired(sunset)
    error = entry.lifecycle.retired_error("endpoint_retired", None)
    assert isinstance(error, Gone) and error.code == "endpoint_retired"
    assert error.details is not None
    assert error.details["replacement"] == "POST /v2/things/{id}/cancel"


def test_paths_are_checked_against_the_documented_schema() -> None:
    assert known(ChatCompletion, ("choices", "message", "content"))
    assert known(ChatCompletion, ("usage", "prompt_tokens_details", "cached_tokens"))
    assert known(ChatCompletion, ("choices", "logprobs", "anything"))  # an open mapping
    assert not known(ChatCompletion, ("choices", "mood"))
    assert not known(ChatCompletion, ("id", "deeper"))
    assert known(Moderation, ("results", "categories", "violence"))


def test_projection_through_arrays_and_overlapping_paths() -> None:
    body = {"a": [{"b": 1, "c": 2}, {"b": 3, "c": 4}], "d": {"e": None, "f": 5}}
    assert project(body, parse_fields("a.b")) == {"a": [{"b": 1}, {"b": 3}]}
    assert project(body, parse_fields("d,d.f")) == {"d": {"e": None, "f": 5}}
    assert project(body, parse_fields("d.f,d")) == {"d": {"e": None, "f": 5}}
    assert without_nulls(body) == {"a": body["a"], "d": {"f": 5}}
    with pytest.raises(Exception, match="dotted"):
        parse_fields("a..b")
