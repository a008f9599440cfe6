"""/v1/webhooks: registration with address checks, Standard Webhooks signatures (checked
with an independent implementation), retries into the dead-letter queue, the delivery
log, and the relay of quota events the usage layer records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from gantry.adapters.aws import client
from gantry.adapters.dynamodb_usage import event_put
from gantry.config import Settings
from gantry.domain.usage import QuotaWarning
from gantry.local.job_resources import JobResources
from gantry.local.workers import Workers
from gantry.runtime import Runtime
from tests.conftest import Keys, assert_error
from tests.integration.jobs.conftest import Receiver, wait_until

HOOKS = "/v1/webhooks"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def register(api: TestClient, url: str, **body: Any) -> dict[str, Any]:
    response = api.post(HOOKS, json={"url": url, **body})
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def test_register_list_and_delete(api: TestClient, keys: Keys, receiver: Receiver) -> None:
    headers = bearer(keys.create(org_id="org-hooks"))
    created = api.post(
        HOOKS,
        headers=headers,
        json={"url": receiver.url, "event_types": ["batch.completed"], "description": "ci"},
    ).json()
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == ["batch.completed"]
    listed = api.get(HOOKS, headers=headers).json()["data"]
    assert [h["id"] for h in listed] == [created["id"]]
    assert "secret" not in listed[0]
    other = bearer(keys.create(org_id="org-nothooks"))
    assert api.get(HOOKS, headers=other).json()["data"] == []
    assert_error(api.delete(f"{HOOKS}/{created['id']}", headers=other), 404, "not_found")
    assert_error(api.post(f"{HOOKS}/{created['id']}/test", headers=other), 404, "not_found")
    deleted = api.delete(f"{HOOKS}/{created['id']}", headers=headers)
    assert deleted.json() == {"id": created["id"], "object": "webhook_endpoint", "deleted": True}
    assert api.get(HOOKS, headers=headers).json()["data"] == []


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://169.254.169.254/latest/meta-data/", "url_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", "invalid_url"),
        ("https://10.0.0.8/hook", "url_not_allowed"),
        ("https://192.168.1.1/hook", "url_not_allowed"),
        ("https://[fd00:ec2::254]/hook", "url_not_allowed"),
        ("https://[::ffff:169.254.169.254]/hook", "url_not_allowed"),
        ("http://example.com/hook", "invalid_url"),
        ("ftp://example.com/hook", "invalid_url"),
        ("https://user:pass@example.com/hook", "invalid_url"),
        ("not a url", "invalid_url"),
    ],
)
def test_unsafe_urls_are_refused(api: TestClient, url: str, code: str) -> None:
    assert_error(api.post(HOOKS, json={"url": url}), 400, code, "url")


def test_unknown_event_types_are_refused(api: TestClient, receiver: Receiver) -> None:
    response = api.post(HOOKS, json={"url": receiver.url, "event_types": ["job.done"]})
    assert_error(response, 400, "invalid_value", "event_types")


def test_test_event_is_signed_per_the_standard(
    api: TestClient, workers: Workers, receiver: Receiver
) -> None:
    hook = register(api, receiver.url, event_types=["batch.completed"])
    queued = api.post(f"{HOOKS}/{hook['id']}/test").json()
    (delivery,) = receiver.wait_for(1)
    assert delivery.path == "/hooks"
    payload = Webhook(hook["secret"]).verify(delivery.body, delivery.headers)
    assert payload["type"] == "webhook.test"
    assert payload["id"] == queued["event_id"] == delivery.headers["webhook-id"]
    assert delivery.headers["webhook-signature"].startswith("v1,")
    wait_until(
        lambda: (
            api.get(f"{HOOKS}/{hook['id']}/deliveries").json()["data"][0]["status"] == "delivered"
        )
    )
    log = api.get(f"{HOOKS}/{hook['id']}/deliveries").json()["data"][0]
    assert log["attempts"] == 1 and log["last_status_code"] == 204


def test_a_failing_receiver_gets_retries_then_the_dead_letter_queue(
    api: TestClient,
    workers: Workers,
    receiver: Receiver,
    runtime: Runtime,
    job_resources: JobResources,
) -> None:
    receiver.status = 500
    hook = register(api, receiver.url, event_types=["batch.failed"])
    event_id = api.post(f"{HOOKS}/{hook['id']}/test").json()["event_id"]
    attempts = receiver.wait_for(3)
    assert {a.headers["webhook-id"] for a in attempts} == {event_id}  # same id on each retry

    def failed() -> dict[str, Any] | None:
        log = api.get(f"{HOOKS}/{hook['id']}/deliveries").json()["data"]
        return log[0] if log and log[0]["status"] == "failed" else None

    entry = wait_until(failed)
    assert entry["attempts"] == 3
    assert entry["last_status_code"] == 500
    assert "500" in entry["last_error"]

    sqs = client("sqs", runtime.settings)

    def dead_lettered() -> bool:
        # Other tests' deliveries to receivers that are gone wait there too: read them all
        # (each read hides a message for a while, so the next read sees others).
        while True:
            messages = sqs.receive_message(
                QueueUrl=job_resources.webhook_dlq_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=5,
            ).get("Messages", [])
            if not messages:
                return False
            if any(json.loads(m["Body"]).get("endpoint_id") == hook["id"] for m in messages):
                return True

    wait_until(dead_lettered, timeout=30)
    assert len(receiver.received) == 3


def test_quota_events_from_the_usage_layer_are_delivered(
    api: TestClient, workers: Workers, receiver: Receiver, settings: Settings, keys: Keys
) -> None:
    org = "org-quota-hooks"
    hook = api.post(
        HOOKS,
        headers=bearer(keys.create(org_id=org)),
        json={"url": receiver.url, "event_types": ["quota.threshold_crossed"]},
    ).json()
    warning = QuotaWarning("organization", org, "tokens_per_day", 83, "2026-11-28", 1000, 830)
    item = event_put(settings.usage_table, warning, 80, org, 1_795_000_000.0)
    dynamodb = client("dynamodb", settings)
    dynamodb.put_item(**item)
    (delivery,) = receiver.wait_for(1)
    payload = Webhook(hook["secret"]).verify(delivery.body, delivery.headers)
    assert payload["type"] == "quota.threshold_crossed"
    assert payload["data"]["dimension"] == "tokens_per_day"
    assert payload["data"]["threshold"] == 80
    stored = dynamodb.get_item(
        TableName=settings.usage_table, Key={k: item["Item"][k] for k in ("pk", "sk")}
    )
    assert stored["Item"]["status"]["S"] == "queued"
