"""The worker Lambda entry points on SQS events: partial batch failures, retry delays and
the scheduled relay (the local threads run the same domain code)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from gantry.adapters.sqs_queue import Received
from gantry.lambda_workers import training, webhooks
from gantry.local.invoke import LocalContext
from gantry.runtime import Runtime
from tests.integration.jobs.conftest import Receiver, wait_until

HOOKS = "/v1/webhooks"


def sqs_event(messages: list[Received]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m{index}",
                "receiptHandle": message.receipt,
                "body": json.dumps(message.body),
                "eventSource": "aws:sqs",
            }
            for index, message in enumerate(messages)
        ]
    }


def receive(runtime: Runtime, kind: str, endpoint: str) -> list[Received]:
    """This endpoint's messages of this kind (other tests may have left theirs)."""
    queue = runtime.jobs.webhook_queue

    def found() -> list[Received]:
        return [
            m
            for m in queue.receive(0, 30, 10)
            if m.body.get("kind") == kind and m.body.get("endpoint_id") == endpoint
        ]

    messages: list[Received] = wait_until(found)
    return messages


def test_a_failed_delivery_is_reported_and_retried_later(
    api: TestClient, runtime: Runtime, receiver: Receiver
) -> None:
    receiver.status = 503
    hook = api.post(HOOKS, json={"url": receiver.url, "event_types": ["batch.expired"]})
    endpoint = hook.json()["id"]
    api.post(f"{HOOKS}/{endpoint}/test")
    context = LocalContext(function_name="gantry-webhook_worker")

    fanned = webhooks(sqs_event(receive(runtime, "event", endpoint)), context)
    assert fanned == {"batchItemFailures": []}
    delivery = receive(runtime, "deliver", endpoint)
    result = webhooks(sqs_event(delivery), context)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert len(receiver.received) == 1
    log = api.get(f"{HOOKS}/{endpoint}/deliveries").json()["data"][0]
    assert log["status"] == "pending" and log["attempts"] == 1


def test_the_scheduled_event_relays_quota_events(runtime: Runtime) -> None:
    result = webhooks({"source": "aws.events"}, LocalContext("gantry-webhook_worker"))
    assert set(result) == {"relayed"}
    assert isinstance(result["relayed"], int) and result["relayed"] >= 0


def test_an_unknown_training_message_fails_its_token_and_is_done(runtime: Runtime) -> None:
    message = {"step": "validate", "job_id": "ftjob-doesnotexist1", "task_token": "t"}
    event = {"Records": [{"messageId": "x", "receiptHandle": "r", "body": json.dumps(message)}]}
    # The job is unknown: the worker answers the (unknown) token and reports no failure.
    assert training(event, LocalContext("gantry-training_worker")) == {"batchItemFailures": []}
