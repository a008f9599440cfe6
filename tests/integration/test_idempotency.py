"""Idempotency-Key on POST: the first response replayed (and billed once), a different body
refused, a retry while the first still runs refused with Retry-After, errors not kept."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.adapters import dynamodb_idempotency
from gantry.domain.errors import ServiceUnavailable
from gantry.domain.idempotency import fingerprint, record_id
from gantry.runtime import Runtime
from tests.conftest import FakeClock, assert_error
from tests.integration.test_limits import Caller, new_key, new_org
from tests.integration.test_limits_settlement import scan
from tests.support import wait_until

CHAT = "/v1/chat/completions"
BODY = {
    "model": "gantry-small",
    "messages": [{"role": "user", "content": "Write about the sea."}],
    "max_tokens": 8,
}  # sampled: a second run would give another answer
NO_CACHE = {"Cache-Control": "no-store"}


@pytest.fixture
def caller(runtime: Runtime) -> Caller:
    return new_key(runtime, new_org(runtime))


def send(client: TestClient, caller: Caller, key: str, body: Any = BODY, path: str = CHAT) -> Any:
    headers = {**caller.headers, **NO_CACHE, "Idempotency-Key": key}
    return client.post(path, json=body, headers=headers)


def billed(runtime: Runtime, caller: Caller) -> int:
    return len(scan(runtime, "REQ#", caller.record.key_id))


def test_a_retry_gets_the_first_response_and_is_billed_once(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    first = send(app_client, caller, "order-1")
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    reordered = dict(reversed(list(BODY.items())))  # same JSON, other key order
    second = send(app_client, caller, "order-1", reordered)
    assert second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert second.headers["x-cost-usd"] == first.headers["x-cost-usd"]
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert billed(runtime, caller) == 1
    other = send(app_client, caller, "order-2")
    assert "idempotent-replayed" not in other.headers
    assert billed(runtime, caller) == 2


def test_a_different_body_with_the_same_key_is_a_conflict(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    assert send(app_client, caller, "order-3").status_code == 200
    changed = {**BODY, "max_tokens": 9}
    assert_error(
        send(app_client, caller, "order-3", changed), 409, "idempotency_conflict", "Idempotency-Key"
    )
    other_route = send(app_client, caller, "order-3", {"input": "x"}, "/v1/moderations")
    assert_error(other_route, 409, "idempotency_conflict", "Idempotency-Key")
    assert billed(runtime, caller) == 1


def test_a_retry_while_the_first_runs_is_told_to_wait(
    app_client: TestClient, caller: Caller, runtime: Runtime, clock: FakeClock
) -> None:
    raw = json.dumps(BODY).encode()
    claimed = runtime.idempotency.begin(
        record_id(caller.record.key_id, "order-4"),
        fingerprint("POST", CHAT, "", "application/json", raw),
        now=clock.now(),
        lease_seconds=60,
        org_id=caller.record.org_id,
        key_id=caller.record.key_id,
    )
    assert claimed is None
    waiting = send(app_client, caller, "order-4")
    error = assert_error(waiting, 409, "idempotency_in_progress", "Idempotency-Key")
    assert error["retryable"] is True
    assert waiting.headers["retry-after"] == "1"
    assert billed(runtime, caller) == 0
    clock.advance(61)  # the first request's process died: its claim lapses
    assert send(app_client, caller, "order-4").status_code == 200
    assert billed(runtime, caller) == 1


def test_keys_are_per_api_key(app_client: TestClient, caller: Caller, runtime: Runtime) -> None:
    colleague = new_key(runtime, caller.record.org_id)
    first = send(app_client, caller, "shared-name")
    theirs = send(app_client, colleague, "shared-name", {**BODY, "max_tokens": 5})
    assert first.status_code == theirs.status_code == 200
    assert "idempotent-replayed" not in theirs.headers


def test_errors_are_not_kept_so_a_retry_runs_again(app_client: TestClient, caller: Caller) -> None:
    missing = {**BODY, "model": "no-such-model"}
    assert_error(send(app_client, caller, "order-5", missing), 404, "model_not_found", "model")
    again = send(app_client, caller, "order-5", missing)
    assert again.status_code == 404 and "idempotent-replayed" not in again.headers
    assert send(app_client, caller, "order-5").status_code == 200  # the key is free


def test_streams_are_replayed_whole(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    first = send(app_client, caller, "stream-1", body)
    assert first.status_code == 200 and first.text.endswith("data: [DONE]\n\n")
    second = send(app_client, caller, "stream-1", body)
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.text == first.text
    # A stream settles on its own thread once [DONE] is out: wait for its ledger item.
    wait_until(lambda: billed(runtime, caller) >= 1, timeout=10, interval=0.02)
    assert billed(runtime, caller) == 1


def test_key_creation_is_replayed_not_repeated(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    body = {"name": "ci", "scopes": ["models:read"]}
    first = send(app_client, caller, "new-ci-key", body, "/v1/keys")
    second = send(app_client, caller, "new-ci-key", body, "/v1/keys")
    assert first.status_code == second.status_code == 200, first.text
    assert second.json()["id"] == first.json()["id"]
    listed = app_client.get("/v1/keys", headers=caller.headers).json()["data"]
    assert [k["name"] for k in listed].count("ci") == 1


@pytest.mark.parametrize("value", ["has space", "x" * 256, "tab\there"])
def test_a_malformed_key_is_a_400(app_client: TestClient, caller: Caller, value: str) -> None:
    response = send(app_client, caller, value)
    assert_error(response, 400, "invalid_value", "Idempotency-Key")


def test_without_a_valid_api_key_nothing_is_claimed(app_client: TestClient, caller: Caller) -> None:
    response = app_client.post(CHAT, json=BODY, headers={"Idempotency-Key": "order-6"})
    assert_error(response, 401, "missing_api_key")
    assert send(app_client, caller, "order-6").status_code == 200


def test_get_requests_ignore_the_header(app_client: TestClient, caller: Caller) -> None:
    headers = {**caller.headers, "Idempotency-Key": "listing"}
    for _ in range(2):
        response = app_client.get("/v1/models", headers=headers)
        assert response.status_code == 200
        assert "idempotent-replayed" not in response.headers


def test_a_response_too_large_to_keep_is_never_run_twice(
    app_client: TestClient, caller: Caller, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamodb_idempotency, "MAX_DATA_BYTES", 10)
    assert send(app_client, caller, "order-7").status_code == 200
    retry = send(app_client, caller, "order-7")
    assert_error(retry, 409, "idempotency_not_replayable", "Idempotency-Key")
    assert billed(runtime, caller) == 1


class DownStore:
    def begin(self, *args: Any, **kwargs: Any) -> None:
        raise ServiceUnavailable(
            "The idempotency store is unavailable.", details={"subsystem": "database"}
        )


def test_an_unreachable_store_is_a_503(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    runtime.__dict__["idempotency"] = DownStore()
    response = send(app_client, caller, "order-8")
    error = assert_error(response, 503, "service_unavailable")
    assert error["details"] == {"subsystem": "database"}
    assert billed(runtime, caller) == 0
