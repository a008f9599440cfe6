"""Lambda entry points of the queue workers (the local runtime runs the same code on
threads, see `gantry.local.workers`).

All use partial batch responses: a message listed in `batchItemFailures` stays on the
queue. A webhook delivery that must be retried later has its visibility set to the retry
delay first, so the next attempt comes when the schedule says; after the last try the
redrive policy moves it to the dead-letter queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from gantry.adapters.dynamodb_meter import DynamoMeter
from gantry.runtime import get_runtime

logger = logging.getLogger("gantry.workers")


def _callback_steps(
    event: dict[str, Any], handle: Callable[[dict[str, Any], Callable[[], bool]], None]
) -> dict[str, Any]:
    heartbeat = get_runtime().jobs.callbacks.heartbeat
    failures = []
    for record in event.get("Records", []):
        body = json.loads(record["body"])
        token = str(body.get("task_token", ""))
        try:
            handle(body, lambda token=token: heartbeat(token))  # type: ignore[misc]
        except Exception:
            logger.exception("a workflow step failed; the message will be delivered again")
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def training(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The fine-tuning state machine's steps: validate, train, evaluate. Training that
    would outlive the invocation continues in a new message."""
    worker = get_runtime().jobs.worker

    def handle(body: dict[str, Any], keepalive: Callable[[], bool]) -> None:
        worker.handle(body, keepalive, _seconds_left(context))

    return _callback_steps(event, handle)


def batches(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The batch state machine's steps: validate, run a chunk of lines, finalize. A chunk
    that would outlive the invocation continues in a new message."""
    worker = get_runtime().jobs.batch_worker

    def handle(body: dict[str, Any], keepalive: Callable[[], bool]) -> None:
        worker.handle(body, keepalive, _seconds_left(context))

    return _callback_steps(event, handle)


def _seconds_left(context: Any) -> Callable[[], float]:
    return lambda: float(context.get_remaining_time_in_millis()) / 1000


def webhooks(event: dict[str, Any], context: Any) -> dict[str, Any]:
    jobs = get_runtime().jobs
    if "Records" not in event:  # the scheduled relay of quota events
        return {"relayed": jobs.dispatcher.relay_pending()}
    failures = []
    for record in event["Records"]:
        try:
            outcome = jobs.dispatcher.handle(json.loads(record["body"]))
            if not outcome.done:
                jobs.webhook_queue.retry_after(record["receiptHandle"], outcome.delay)
                failures.append({"itemIdentifier": record["messageId"]})
        except Exception:
            logger.exception("webhook message failed; it will be delivered again")
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def settlements(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Replays the settlements and releases the meter spooled during a DynamoDB outage; a
    message that still cannot be written stays on the queue (and is dead-lettered last)."""
    meter = get_runtime().meter
    failures = []
    for record in event.get("Records", []):
        try:
            if not isinstance(meter, DynamoMeter):
                raise RuntimeError("metering is off: spooled settlements cannot be replayed")
            meter.replay(json.loads(record["body"]))
        except Exception:
            logger.exception("a spooled settlement could not be written yet")
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
