"""Limits through HTTP: the 429 envelopes, rate-limit and quota-warning headers, quota
events, and a provider failure returning its reservation."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.domain.orgs import Limits
from gantry.runtime import Runtime
from tests.conftest import FakeClock, assert_error
from tests.integration.test_limits import new_key, new_org

CHAT = {"model": "gantry-small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def chat(client: TestClient, key: str, body: dict[str, Any] | None = None) -> Any:
    return client.post(
        "/v1/chat/completions", json=body or CHAT, headers={"Authorization": f"Bearer {key}"}
    )


def ledger_items(runtime: Runtime, request_id: str) -> list[dict[str, Any]]:
    from gantry.adapters.aws import client

    found = client("dynamodb", runtime.settings).get_item(
        TableName=runtime.settings.usage_table,
        Key={"pk": {"S": f"REQ#{request_id}"}, "sk": {"S": "LEDGER"}},
        ConsistentRead=True,
    )
    return [found["Item"]] if "Item" in found else []


def test_success_carries_rate_limit_headers(app_client: TestClient, runtime: Runtime) -> None:
    org_id = new_org(runtime, tier="standard")
    caller = new_key(runtime, org_id)
    response = chat(app_client, caller.full_key)
    assert response.status_code == 200, response.text
    headers = response.headers
    assert headers["x-ratelimit-limit-requests"] == "600"
    assert headers["x-ratelimit-remaining-requests"] == "99"  # standard burst: 100
    assert headers["x-ratelimit-reset-requests"] == "100ms"
    assert headers["x-ratelimit-limit-tokens"] == "400000"
    reserved = int(headers["x-ratelimit-limit-tokens"]) - int(
        headers["x-ratelimit-remaining-tokens"]
    )
    usage = response.json()["usage"]
    assert reserved == usage["prompt_tokens"] + 8  # prompt plus max_tokens, reserved
    assert re.fullmatch(r"\d+ms|\d+(\.\d+)?s", headers["x-ratelimit-reset-tokens"])
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(headers)
    assert "x-quota-warning" not in headers


def test_requests_per_minute_429_envelope(
    app_client: TestClient, runtime: Runtime, clock: FakeClock
) -> None:
    org_id = new_org(runtime)
    caller = new_key(runtime, org_id, limits=Limits(requests_per_minute=2, request_burst=1))
    assert chat(app_client, caller.full_key).status_code == 200
    response = chat(app_client, caller.full_key)
    error = assert_error(response, 429, "rate_limit_exceeded", kind="rate_limit_error")
    assert response.headers["retry-after"] == "30"
    assert error["retryable"] is True
    assert error["details"] == {
        "dimension": "requests_per_minute",
        "scope": "key",
        "limit": 2,
        "used": 1,
        "requested": 1,
        "reset_at": pytest.approx(clock.now() + 30, abs=0.01),
    }
    assert "30s" in str(error["message"])
    clock.advance(30)
    assert chat(app_client, caller.full_key).status_code == 200


def test_tokens_per_minute_names_the_organization(app_client: TestClient, runtime: Runtime) -> None:
    org_id = new_org(runtime, tokens_per_minute=100)
    caller = new_key(runtime, org_id)
    body = {**CHAT, "model": "gantry-echo", "max_tokens": 90}
    first = chat(app_client, caller.full_key, body)
    assert first.status_code == 200
    used = first.json()["usage"]
    assert used["total_tokens"] + used["prompt_tokens"] + 90 > 100
    response = chat(app_client, caller.full_key, body)  # what was used + 90 does not fit
    error = assert_error(response, 429, "rate_limit_exceeded", kind="rate_limit_error")
    details = error["details"]
    assert isinstance(details, dict)
    assert details["dimension"] == "tokens_per_minute"
    assert details["scope"] == "organization"
    assert int(response.headers["retry-after"]) >= 1


def test_spent_budget_is_insufficient_quota_without_retry_after(
    app_client: TestClient, runtime: Runtime
) -> None:
    org_id = new_org(runtime, monthly_budget_usd=0.00001)
    caller = new_key(runtime, org_id)
    response = chat(app_client, caller.full_key, {**CHAT, "max_tokens": 100})
    error = assert_error(response, 429, "insufficient_quota", kind="insufficient_quota")
    assert "retry-after" not in response.headers
    assert error["retryable"] is False
    details = error["details"]
    assert isinstance(details, dict)
    assert details["dimension"] == "monthly_cost"
    assert details["scope"] == "organization"
    assert details["limit"] == pytest.approx(0.00001)


def test_quota_warning_header_and_events_once_per_threshold(
    app_client: TestClient, runtime: Runtime
) -> None:
    org_id = new_org(runtime, tokens_per_day=1000)
    caller = new_key(runtime, org_id)
    echo = {**CHAT, "model": "gantry-echo"}  # answers "hi": a few tokens, every time
    quiet = chat(app_client, caller.full_key, {**echo, "max_tokens": 100})
    assert "x-quota-warning" not in quiet.headers
    warned = chat(app_client, caller.full_key, {**echo, "max_tokens": 800})
    match = re.fullmatch(r"tokens_per_day=(\d+)%", warned.headers["x-quota-warning"])
    assert match and 80 <= int(match.group(1)) < 90
    high = chat(app_client, caller.full_key, {**echo, "max_tokens": 900})
    match = re.fullmatch(r"tokens_per_day=(\d+)%", high.headers["x-quota-warning"])
    assert match and int(match.group(1)) >= 90
    again = chat(app_client, caller.full_key, {**echo, "max_tokens": 900})
    assert again.headers["x-quota-warning"].startswith("tokens_per_day=9")  # no new crossing

    from gantry.adapters.aws import client

    items = client("dynamodb", runtime.settings).query(
        TableName=runtime.settings.usage_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"EVENT#{org_id}"}},
    )["Items"]
    payloads = [json.loads(item["payload"]["S"]) for item in items]
    assert sorted(p["threshold"] for p in payloads) == [80, 90]
    for payload in payloads:
        assert payload["type"] == "quota.threshold_crossed"
        assert payload["dimension"] == "tokens_per_day"
        assert payload["scope"] == "organization" and payload["org_id"] == org_id
    assert {item["status"]["S"] for item in items} == {"pending"}


def test_provider_failure_releases_the_reservation(
    app_client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    org_id = new_org(runtime, tokens_per_day=10_000, monthly_budget_usd=10.0)
    caller = new_key(runtime, org_id, limits=Limits(tokens_per_day=5000))

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("provider exploded")

    monkeypatch.setattr(runtime.providers["local"], "chat", broken)
    response = chat(app_client, caller.full_key)
    assert_error(response, 500, "internal_error", kind="server_error")
    pks = [f"KEY#{caller.record.key_id}", f"ORG#{org_id}"]
    states = runtime.usage.quota_states(pks)
    for pk in pks:
        assert states[pk].day_tokens == 0, pk
        assert states[pk].leases_held == 0 and not states[pk].leases, pk
    assert states[f"ORG#{org_id}"].month_cost == 0
    assert states[f"ORG#{org_id}"].request_tat > 0  # the request itself still counts
    assert ledger_items(runtime, response.headers["x-request-id"]) == []


def test_a_settled_request_leaves_one_ledger_item(app_client: TestClient, runtime: Runtime) -> None:
    org_id = new_org(runtime, tokens_per_day=10_000)
    caller = new_key(runtime, org_id)
    response = chat(app_client, caller.full_key)
    (item,) = ledger_items(runtime, response.headers["x-request-id"])
    usage = response.json()["usage"]
    assert int(item["prompt_tokens"]["N"]) == usage["prompt_tokens"]
    assert int(item["completion_tokens"]["N"]) == usage["completion_tokens"]
    assert item["key_id"]["S"] == caller.record.key_id
    assert int(item["reserved_tokens"]["N"]) == usage["prompt_tokens"] + 8
    state = runtime.usage.quota_states([f"ORG#{org_id}"])[f"ORG#{org_id}"]
    assert state.day_tokens == usage["total_tokens"]  # the unused reservation came back


def test_a_client_chosen_request_id_never_makes_requests_free(
    app_client: TestClient, runtime: Runtime
) -> None:
    org_id = new_org(runtime, tokens_per_day=100_000)
    caller = new_key(runtime, org_id)
    headers = {"Authorization": f"Bearer {caller.full_key}", "x-request-id": "my-request-1"}
    used = 0
    for _ in range(5):
        response = app_client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == "my-request-1"  # echoed for correlation
        used += response.json()["usage"]["total_tokens"]
    state = runtime.usage.quota_states([f"ORG#{org_id}"])[f"ORG#{org_id}"]
    assert state.day_tokens == used  # every request counted, none refunded
    assert state.leases_held == 0
    usage = app_client.get("/v1/usage", headers={"Authorization": f"Bearer {caller.full_key}"})
    assert usage.json()["totals"]["requests"] == 5
