"""Lambda entry points of the queue workers (the local runtime runs the same code on
threads, see `gantry.local.workers`).

Both use partial batch responses: a message listed in `batchItemFailures` stays on the
queue. A webhook delivery that must be retried later has its visibility set to the retry
delay first, so the next attempt comes when the schedule says; after the last try the
redrive policy moves it to the dead-letter queue.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from gantry.runtime import get_runtime

logger = logging.getLogger("gantry.workers")


def training(event: dict[str, Any], context: Any) -> dict[str, Any]:
    jobs = get_runtime().jobs
    failures = []
    for record in event.get("Records", []):
        body = json.loads(record["body"])
        token = str(body.get("task_token", ""))

        def keepalive(token: str = token) -> bool:
            return jobs.callbacks.heartbeat(token)

        try:
            jobs.worker.handle(body, keepalive)
        except Exception:
            logger.exception("training step failed; the message will be delivered again")
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


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
