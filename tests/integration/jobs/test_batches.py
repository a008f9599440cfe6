"""Batches through the real state machine (moto runs infra/statemachines/batch.asl.json: a
Map over chunks of lines), served by the local batch worker: a 200-request batch end to
end, per-line failures, billing at the batch discount, cancellation, expiry, failed
validation and bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from gantry.local.workers import Workers
from gantry.runtime import Runtime
from tests.conftest import Keys, assert_error
from tests.integration.jobs.conftest import (
    MovingClock,
    Receiver,
    chat_examples,
    jsonl,
    upload,
    wait_until,
)

BATCHES = "/v1/batches"
CHAT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")


def line(custom_id: str, body: dict[str, Any], url: str = CHAT) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def echo_line(index: int, model: str = "gantry-echo") -> dict[str, Any]:
    content = f"request number {index} asks about item {index * 7}"
    return line(
        f"req-{index}", {"model": model, "messages": [{"role": "user", "content": content}]}
    )


def create_batch(api: TestClient, file_id: str, **extra: Any) -> dict[str, Any]:
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **extra}
    response = api.post(BATCHES, json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def wait_for(
    api: TestClient, batch_id: str, statuses: tuple[str, ...] = FINAL, timeout: float = 120.0
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"{BATCHES}/{batch_id}").json()
        return body if body["status"] in statuses else None

    found: dict[str, Any] = wait_until(done, timeout, interval=0.2)
    return found


def file_lines(api: TestClient, file_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200, response.text
    return [json.loads(raw) for raw in response.text.splitlines() if raw]


def test_a_batch_of_200_requests_completes_with_outputs_matching_inputs(
    api: TestClient, workers: Workers, receiver: Receiver
) -> None:
    hook = api.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["batch.completed"]}
    ).json()
    requests = [echo_line(i) for i in range(200)]
    source = upload(api, jsonl(requests), purpose="batch", name="requests.jsonl")

    batch = create_batch(api, source["id"], metadata={"run": "nightly"})
    assert batch["object"] == "batch"
    assert batch["status"] == "validating"
    assert batch["request_counts"] == {"total": 200, "completed": 0, "failed": 0}
    assert batch["expires_at"] - batch["created_at"] == 86_400
    assert batch["metadata"] == {"run": "nightly"}

    done = wait_for(api, batch["id"])
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 200, "completed": 200, "failed": 0}
    for name in ("in_progress_at", "finalizing_at", "completed_at"):
        assert done[name] is not None and done[name] >= done["created_at"]
    assert done["error_file_id"] is None
    assert done["errors"] is None

    output = file_lines(api, done["output_file_id"])
    assert len(output) == 200
    by_id = {entry["custom_id"]: entry for entry in output}
    assert set(by_id) == {r["custom_id"] for r in requests}
    for request in requests:
        entry = by_id[request["custom_id"]]
        assert entry["error"] is None
        assert entry["response"]["status_code"] == 200
        assert entry["id"] == entry["response"]["request_id"]
        body = entry["response"]["body"]
        assert body["object"] == "chat.completion"
        sent = request["body"]["messages"][0]["content"]
        assert body["choices"][0]["message"]["content"] == sent
    assert len({entry["id"] for entry in output}) == 200

    meta = api.get(f"/v1/files/{done['output_file_id']}").json()
    assert meta["purpose"] == "batch_output"

    (delivery,) = receiver.wait_for(1)
    event = Webhook(hook["secret"]).verify(delivery.body, delivery.headers)
    assert event["type"] == "batch.completed"
    assert event["data"]["id"] == batch["id"]


def test_failed_lines_go_to_the_error_file_with_their_error(
    api: TestClient, workers: Workers
) -> None:
    requests = [
        echo_line(0),
        line(
            "unknown-model",
            {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
        ),
        line(
            "bad-temperature",
            {
                "model": "gantry-echo",
                "temperature": 9,
                "messages": [{"role": "user", "content": "x"}],
            },
        ),
        echo_line(3),
    ]
    source = upload(api, jsonl(requests), purpose="batch", name="mixed.jsonl")
    done = wait_for(api, create_batch(api, source["id"])["id"])

    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert {e["custom_id"] for e in file_lines(api, done["output_file_id"])} == {"req-0", "req-3"}
    errors = {e["custom_id"]: e for e in file_lines(api, done["error_file_id"])}
    assert errors["unknown-model"]["response"]["status_code"] == 404
    assert errors["unknown-model"]["response"]["body"]["error"]["code"] == "model_not_found"
    assert errors["bad-temperature"]["response"]["status_code"] == 400
    assert errors["bad-temperature"]["response"]["body"]["error"]["param"] == "temperature"


def test_batch_lines_are_billed_once_at_the_batch_discount(
    app_client: TestClient, keys: Keys, workers: Workers
) -> None:
    key = keys.create(org_id="org-batch-billing")
    app_client.headers["Authorization"] = f"Bearer {key}"
    requests = [
        line(
            f"q{i}",
            {
                "model": "gantry-small",
                "seed": i,
                "max_tokens": 12,
                "messages": [{"role": "user", "content": f"Tell me about the harbour {i}"}],
            },
        )
        for i in range(5)
    ]
    source = upload(app_client, jsonl(requests), purpose="batch", name="priced.jsonl")
    done = wait_for(app_client, create_batch(app_client, source["id"])["id"])
    assert done["status"] == "completed", done

    usages = [
        e["response"]["body"]["usage"] for e in file_lines(app_client, done["output_file_id"])
    ]
    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)
    list_price = (prompt * 0.1 + completion * 0.4) / 1_000_000  # gantry-small's prices

    totals = app_client.get("/v1/usage").json()["totals"]
    assert totals["requests"] == 5
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (prompt, completion)
    assert totals["cost_usd"] == pytest.approx(list_price * 0.5, abs=1e-9)


def test_cancelling_stops_new_lines_and_keeps_the_finished_ones(
    api: TestClient, workers: Workers, runtime: Runtime, receiver: Receiver
) -> None:
    hook = api.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["batch.cancelled"]}
    ).json()
    slow = [echo_line(i, model="gantry-echo-paced") for i in range(100)]
    source = upload(api, jsonl(slow), purpose="batch", name="slow.jsonl")
    batch = create_batch(api, source["id"])

    def started() -> bool:
        body = api.get(f"{BATCHES}/{batch['id']}").json()
        return body["status"] == "in_progress" and body["request_counts"]["completed"] > 0

    wait_until(started, 60, interval=0.1)
    cancelling = api.post(f"{BATCHES}/{batch['id']}/cancel")
    assert cancelling.status_code == 200, cancelling.text
    assert cancelling.json()["status"] == "cancelling"
    assert cancelling.json()["cancelling_at"] is not None

    done = wait_for(api, batch["id"])
    assert done["status"] == "cancelled"
    counts = done["request_counts"]
    assert counts["total"] == 100
    assert counts["completed"] + counts["failed"] == 100
    assert 0 < counts["completed"] < 100
    skipped = file_lines(api, done["error_file_id"])
    assert {e["error"]["code"] for e in skipped} == {"batch_cancelled"}
    assert all(e["response"] is None for e in skipped)
    finished = file_lines(api, done["output_file_id"])
    assert len(finished) == counts["completed"]
    assert {e["custom_id"] for e in finished}.isdisjoint(e["custom_id"] for e in skipped)

    again = api.post(f"{BATCHES}/{batch['id']}/cancel")
    assert_error(again, 400, "batch_not_cancellable", param="batch_id")
    (delivery,) = receiver.wait_for(1)
    event = Webhook(hook["secret"]).verify(delivery.body, delivery.headers)
    assert (event["type"], event["data"]["id"]) == ("batch.cancelled", batch["id"])


def test_lines_left_when_the_window_closes_expire(
    api: TestClient, runtime: Runtime, clock: MovingClock, receiver: Receiver
) -> None:
    api.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["batch.expired"]})
    source = upload(api, jsonl([echo_line(i) for i in range(30)]), purpose="batch")
    batch = create_batch(api, source["id"])
    clock.advance(86_400 + 60)  # the workers start after the completion window closed
    with Workers(runtime, relay_every=0.2):
        done = wait_for(api, batch["id"])
        (delivery,) = receiver.wait_for(1)
    assert done["status"] == "expired"
    assert done["expired_at"] is not None
    assert done["request_counts"] == {"total": 30, "completed": 0, "failed": 30}
    assert done["output_file_id"] is None
    expired = file_lines(api, done["error_file_id"])
    assert len(expired) == 30
    assert {e["error"]["code"] for e in expired} == {"batch_expired"}
    # (Signed a day ahead of real time by the moved clock; signatures are checked elsewhere.)
    event = json.loads(delivery.body)
    assert (event["type"], event["data"]["id"]) == ("batch.expired", batch["id"])


def test_a_batch_whose_lines_do_not_fit_its_endpoint_fails_validation(
    api: TestClient, workers: Workers, receiver: Receiver
) -> None:
    hook = api.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["batch.failed"]}
    ).json()
    requests = [
        echo_line(0),
        line("embed", {"model": "gantry-embed-small", "input": "x"}, url="/v1/embeddings"),
        line("streamed", {"model": "gantry-echo", "stream": True, "messages": []}),
    ]
    source = upload(api, jsonl(requests), purpose="batch")
    done = wait_for(api, create_batch(api, source["id"])["id"])

    assert done["status"] == "failed"
    assert done["failed_at"] is not None
    errors = done["errors"]["data"]
    assert [(e["code"], e["line"]) for e in errors] == [
        ("mismatched_endpoint", 2),
        ("unsupported_parameter", 3),
    ]
    assert errors[1]["param"] == "body.stream"
    assert done["output_file_id"] is None and done["error_file_id"] is None
    (delivery,) = receiver.wait_for(1)
    event = Webhook(hook["secret"]).verify(delivery.body, delivery.headers)
    assert (event["type"], event["data"]["id"]) == ("batch.failed", done["id"])


def test_batches_are_listed_newest_first_and_paginated(api: TestClient, keys: Keys) -> None:
    key = keys.create(org_id="org-batch-listing")
    api.headers["Authorization"] = f"Bearer {key}"
    source = upload(api, jsonl([echo_line(0)]), purpose="batch")
    ids = [create_batch(api, source["id"])["id"] for _ in range(3)]

    first = api.get(BATCHES, params={"limit": 2}).json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    assert first["last_id"] == ids[1]
    rest = api.get(BATCHES, params={"limit": 2, "after": first["last_id"]}).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False


def test_running_batches_suggest_when_to_poll_again(api: TestClient) -> None:
    source = upload(api, jsonl([echo_line(0)]), purpose="batch")
    batch = create_batch(api, source["id"])
    response = api.get(f"{BATCHES}/{batch['id']}")
    assert response.headers["retry-after"] == "2"


def test_bad_batch_requests_are_clear_errors(
    api: TestClient, app_client: TestClient, keys: Keys
) -> None:
    source = upload(api, jsonl([echo_line(0)]), purpose="batch")
    tuning = upload(api, chat_examples())

    wrong_purpose = api.post(
        BATCHES, json={"input_file_id": tuning["id"], "endpoint": CHAT, "completion_window": "24h"}
    )
    assert_error(wrong_purpose, 400, "invalid_file_purpose", param="input_file_id")
    unknown_file = api.post(
        BATCHES,
        json={
            "input_file_id": "file-0000000000000000",
            "endpoint": CHAT,
            "completion_window": "24h",
        },
    )
    assert_error(unknown_file, 404, "not_found", param="input_file_id")
    bad_endpoint = api.post(
        BATCHES,
        json={"input_file_id": source["id"], "endpoint": "/v1/files", "completion_window": "24h"},
    )
    assert_error(bad_endpoint, 400, "invalid_value", param="endpoint")
    bad_window = api.post(
        BATCHES, json={"input_file_id": source["id"], "endpoint": CHAT, "completion_window": "48h"}
    )
    assert_error(bad_window, 400, "invalid_value", param="completion_window")
    missing = api.post(BATCHES, json={"input_file_id": source["id"], "endpoint": CHAT})
    assert_error(missing, 400, "missing_required_parameter", param="completion_window")
    unknown = api.get(f"{BATCHES}/batch_0000000000000000")
    assert_error(unknown, 404, "not_found", param="batch_id")
    assert_error(api.post(f"{BATCHES}/not-a-batch/cancel"), 404, "not_found", param="batch_id")

    batch = create_batch(api, source["id"])
    stranger = keys.create(org_id="org-batch-stranger")
    other = {"Authorization": f"Bearer {stranger}"}
    hidden = app_client.get(f"{BATCHES}/{batch['id']}", headers=other)
    assert_error(hidden, 404, "not_found", param="batch_id")
    cross_file = app_client.post(
        BATCHES,
        headers=other,
        json={"input_file_id": source["id"], "endpoint": CHAT, "completion_window": "24h"},
    )
    assert_error(cross_file, 404, "not_found", param="input_file_id")
    reader = keys.create(org_id="org-batch-stranger", scopes=("batches:read",))
    denied = app_client.post(
        BATCHES,
        headers={"Authorization": f"Bearer {reader}"},
        json={"input_file_id": source["id"], "endpoint": CHAT, "completion_window": "24h"},
    )
    assert_error(denied, 403, "insufficient_scope")


@pytest.mark.parametrize(
    ("endpoint", "body", "kind"),
    [
        ("/v1/embeddings", {"model": "gantry-embed-small", "input": "a quiet harbour"}, "list"),
        (
            "/v1/completions",
            {"model": "gantry-echo", "prompt": "a quiet harbour"},
            "text_completion",
        ),
        ("/v1/moderations", {"input": "a quiet harbour"}, None),
    ],
)
def test_every_batch_endpoint_answers_as_its_route_does(
    api: TestClient, workers: Workers, endpoint: str, body: dict[str, Any], kind: str | None
) -> None:
    requests = [line(f"r{i}", body, url=endpoint) for i in range(3)]
    source = upload(api, jsonl(requests), purpose="batch")
    created = api.post(
        BATCHES,
        json={"input_file_id": source["id"], "endpoint": endpoint, "completion_window": "24h"},
    )
    assert created.status_code == 200, created.text
    done = wait_for(api, created.json()["id"])
    assert done["status"] == "completed", done
    direct = api.post(endpoint, json=body).json()
    for entry in file_lines(api, done["output_file_id"]):
        answer = entry["response"]["body"]
        assert answer.get("object") == kind
        assert answer.keys() == direct.keys()


def test_dependency_failures_are_503s_that_leave_nothing_half_made(
    api: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import EndpointConnectionError

    source = upload(api, jsonl([echo_line(0)]), purpose="batch")
    body = {"input_file_id": source["id"], "endpoint": CHAT, "completion_window": "24h"}
    store = runtime.jobs.batch_store

    def unreachable(**_: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="http://dynamodb")

    with monkeypatch.context() as patch:
        patch.setattr(store._client, "put_item", unreachable)
        error = assert_error(api.post(BATCHES, json=body), 503, "service_unavailable")
    assert error["details"] == {"subsystem": "database"}

    def no_workflow(name: str, payload: Any) -> str:
        raise EndpointConnectionError(endpoint_url="http://states")

    before = {b["id"] for b in api.get(BATCHES, params={"limit": 100}).json()["data"]}
    monkeypatch.setattr(runtime.jobs.batches._workflow, "start", no_workflow)
    refused = api.post(BATCHES, json=body)
    assert_error(refused, 503, "service_unavailable")
    assert refused.headers["retry-after"] == "5"
    (made,) = [
        b for b in api.get(BATCHES, params={"limit": 100}).json()["data"] if b["id"] not in before
    ]
    assert made["status"] == "failed"  # never left validating with no workflow behind it
    assert made["errors"]["data"][0]["code"] == "workflow_unavailable"
