"""GET /v1/usage: totals from the counters equal the ledger, buckets and groups, limits and
warnings, and who may read which key's usage."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.domain.orgs import Limits
from gantry.runtime import Runtime
from tests.conftest import FakeClock, assert_error
from tests.integration.test_limits import Caller, new_key, new_org
from tests.integration.test_limits_settlement import scan, sums

HOUR = 3600


def call(client: TestClient, caller: Caller, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, json=body, headers=caller.headers)
    assert response.status_code == 200, response.text


def traffic(client: TestClient, caller: Caller, clock: FakeClock) -> None:
    """Chat and embeddings over two hours."""
    chat = {"model": "gantry-small", "messages": [{"role": "user", "content": "hello"}]}
    call(client, caller, "/v1/chat/completions", {**chat, "max_tokens": 5})
    call(client, caller, "/v1/chat/completions", {**chat, "max_tokens": 7})
    call(client, caller, "/v1/embeddings", {"model": "gantry-embed-small", "input": "a b c"})
    clock.advance(HOUR)
    call(client, caller, "/v1/chat/completions", {**chat, "max_tokens": 3})


def usage(client: TestClient, caller: Caller, **params: Any) -> Any:
    return client.get("/v1/usage", params=params, headers=caller.headers)


@pytest.fixture
def start(clock: FakeClock) -> int:
    now = int(clock.now())
    return now - now % HOUR - HOUR


def test_totals_equal_the_sum_of_the_ledger(
    app_client: TestClient, runtime: Runtime, clock: FakeClock, start: int
) -> None:
    org_id = new_org(runtime)
    caller = new_key(runtime, org_id, scopes=("completions:write", "usage:read"))
    traffic(app_client, caller, clock)
    response = usage(app_client, caller, start=start)
    assert response.status_code == 200, response.text
    body = response.json()
    ledger = scan(runtime, "REQ#", caller.record.key_id)
    requests, prompt, completion, cost_nano = sums(ledger)
    assert requests == 4
    assert body["totals"] == {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost_usd": pytest.approx(cost_nano / 1e9, abs=1e-12),
        "cached_requests": 0,
        "cached_tokens": 0,
    }
    assert body["object"] == "usage.report"
    assert body["scope"] == "key" and body["key_id"] == caller.record.key_id
    assert body["org_id"] == org_id and body["bucket_width"] == "1d"


def test_hourly_buckets_grouped_by_model_and_endpoint(
    app_client: TestClient, runtime: Runtime, clock: FakeClock, start: int
) -> None:
    org_id = new_org(runtime)
    caller = new_key(runtime, org_id, scopes=("completions:write", "usage:read"))
    base = int(clock.now()) - int(clock.now()) % HOUR
    traffic(app_client, caller, clock)
    response = usage(app_client, caller, start=base, bucket_width="1h", group_by="model,endpoint")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["group_by"] == ["model", "endpoint"]
    first, second = body["buckets"]
    assert (first["start_time"], first["end_time"]) == (base, base + HOUR)
    assert second["start_time"] == base + HOUR
    by_model = {(r["model"], r["endpoint"]): r["requests"] for r in first["results"]}
    assert by_model == {
        ("gantry-embed-small", "embeddings"): 1,
        ("gantry-small", "chat.completions"): 2,
    }
    assert [(r["model"], r["requests"]) for r in second["results"]] == [("gantry-small", 1)]
    assert set(second["results"][0]) == {
        "model",
        "endpoint",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "cached_requests",
        "cached_tokens",
    }
    daily = usage(app_client, caller, start=base, group_by="endpoint").json()
    assert sum(len(b["results"]) for b in daily["buckets"]) in (2, 4)  # 1 or 2 days touched
    assert daily["totals"] == body["totals"]


def test_admin_sees_the_organization_by_key(
    app_client: TestClient, runtime: Runtime, clock: FakeClock, start: int
) -> None:
    org_id = new_org(runtime)
    admin = new_key(runtime, org_id)
    worker = new_key(runtime, org_id, scopes=("completions:write",))
    traffic(app_client, worker, clock)
    call(
        app_client,
        admin,
        "/v1/embeddings",
        {"model": "gantry-embed-small", "input": "x"},
    )
    body = usage(app_client, admin, start=start, group_by="key_id").json()
    assert body["scope"] == "organization" and body["key_id"] is None
    per_key: dict[str, int] = {}
    for bucket in body["buckets"]:
        for result in bucket["results"]:
            per_key[result["key_id"]] = per_key.get(result["key_id"], 0) + result["requests"]
    assert per_key == {worker.record.key_id: 4, admin.record.key_id: 1}
    assert body["totals"]["requests"] == 5
    one = usage(app_client, admin, start=start, key_id=worker.record.key_id).json()
    assert one["scope"] == "key" and one["totals"]["requests"] == 4


def test_limits_and_warnings(app_client: TestClient, runtime: Runtime, clock: FakeClock) -> None:
    org_id = new_org(runtime, tier="standard", tokens_per_day=1000)
    caller = new_key(
        runtime,
        org_id,
        scopes=("completions:write", "usage:read"),
        limits=Limits(requests_per_minute=10, request_burst=5),
    )
    echo = {"model": "gantry-echo", "messages": [{"role": "user", "content": "hi"}]}
    call(app_client, caller, "/v1/chat/completions", {**echo, "max_tokens": 5})
    body = usage(app_client, caller).json()
    limits = {(entry["scope"], entry["dimension"]): entry for entry in body["limits"]}
    assert set(limits) == {
        ("organization", "requests_per_minute"),
        ("organization", "tokens_per_minute"),
        ("organization", "tokens_per_day"),
        ("organization", "concurrent_requests"),
        ("organization", "monthly_cost"),
        ("key", "requests_per_minute"),
    }
    key_rpm = limits[("key", "requests_per_minute")]
    assert (key_rpm["limit"], key_rpm["burst"], key_rpm["used"]) == (10, 5, 1)
    assert key_rpm["remaining"] == 4 and key_rpm["percent"] == 20
    assert key_rpm["reset_at"] == pytest.approx(clock.now() + 6, abs=0.01)
    tokens = limits[("organization", "tokens_per_day")]
    assert tokens["limit"] == 1000 and 0 < tokens["used"] < 20
    assert limits[("organization", "concurrent_requests")]["used"] == 0
    assert body["warnings"] == []

    # Spend most of the day's tokens for real: long prompts (settled, not just reserved).
    long_prompt = {"role": "user", "content": " ".join(["word"] * 420)}
    for _ in range(2):
        call(
            app_client,
            caller,
            "/v1/chat/completions",
            {"model": "gantry-echo", "messages": [long_prompt], "max_tokens": 10},
        )
    state = runtime.usage.quota_states([f"ORG#{org_id}"])[f"ORG#{org_id}"]
    assert 800 <= state.day_tokens < 1000
    warned = usage(app_client, caller).json()
    (warning,) = warned["warnings"]
    assert warning["scope"] == "organization" and warning["dimension"] == "tokens_per_day"
    assert warning["percent"] >= 80 and warning["threshold"] in (80, 90)


def test_another_organizations_key_is_not_found(app_client: TestClient, runtime: Runtime) -> None:
    admin = new_key(runtime, new_org(runtime))
    stranger = new_key(runtime, new_org(runtime))
    response = usage(app_client, admin, key_id=stranger.record.key_id)
    assert_error(response, 404, "not_found", "key_id")
    response = usage(app_client, admin, key_id="nosuchkey0001")
    assert_error(response, 404, "not_found", "key_id")


def test_a_plain_key_reads_only_itself(app_client: TestClient, runtime: Runtime) -> None:
    org_id = new_org(runtime)
    reader = new_key(runtime, org_id, scopes=("usage:read",))
    colleague = new_key(runtime, org_id)
    response = usage(app_client, reader, key_id=colleague.record.key_id)
    error = assert_error(response, 403, "insufficient_scope")
    assert error["details"] == {"required_scope": "keys:read"}
    own = usage(app_client, reader, key_id=reader.record.key_id)
    assert own.status_code == 200 and own.json()["totals"]["requests"] == 0
    no_scope = new_key(runtime, org_id, scopes=("completions:write",))
    assert_error(usage(app_client, no_scope), 403, "insufficient_scope")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"bucket_width": "2h"}, "bucket_width"),
        ({"group_by": "model,colour"}, "group_by"),
        ({"start": "yesterday"}, "start"),
        ({"end": "1.5"}, "end"),
        ({"start": 2_000_000_000, "end": 1_000_000_000}, "end"),
        ({"start": 1_000_000_000, "bucket_width": "1h"}, "start"),
        ({"key_id": "bad id!"}, "key_id"),
    ],
)
def test_bad_params_are_400_naming_them(
    app_client: TestClient, runtime: Runtime, params: dict[str, Any], param: str
) -> None:
    caller = new_key(runtime, new_org(runtime))
    response = usage(app_client, caller, **params)
    assert_error(response, 400, response.json()["error"]["code"], param)
