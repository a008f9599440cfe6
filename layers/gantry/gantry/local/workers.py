"""Background threads that do locally what the worker Lambda functions do in AWS: consume
the training and batch queues (the state machines' callback tasks), the webhook queue
(deliveries, with their retries) and the settlement queue (usage the meter could not write
during an outage), and relay pending quota events to the webhook queue."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from gantry.adapters.dynamodb_meter import DynamoMeter
from gantry.adapters.sqs_queue import Received, SqsQueue
from gantry.runtime import Runtime

logger = logging.getLogger("gantry.workers")

# Short polls: the local moto server applies one request at a time, so a long poll would
# hold every other AWS call (the state machine's included) for its whole wait.
POLL_SECONDS = 0.1
TRAINING_VISIBILITY_SECONDS = 60
BATCH_VISIBILITY_SECONDS = 60
SETTLEMENT_VISIBILITY_SECONDS = 30
WEBHOOK_VISIBILITY_SECONDS = 30
RELAY_EVERY_SECONDS = 5.0


class QueueWorker:
    """Receives messages one at a time and hands each to `handle` until stopped."""

    def __init__(
        self,
        name: str,
        queue: SqsQueue,
        handle: Callable[[Received], None],
        visibility_seconds: int,
        idle: Callable[[], None] | None = None,
    ) -> None:
        self.queue = queue
        self._handle = handle
        self._visibility = visibility_seconds
        self._idle = idle
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"gantry-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._idle is not None:
                    self._idle()
                messages = self.queue.receive(0, self._visibility)
                for message in messages:
                    if self._stop.is_set():
                        return
                    self._handle(message)
                if not messages:
                    self._stop.wait(POLL_SECONDS)
            except Exception:
                if self._stop.is_set():
                    return
                logger.exception("the %s worker failed; it carries on", self.thread.name)
                self._stop.wait(POLL_SECONDS)


def callback_handler(
    queue: SqsQueue,
    handle: Callable[[dict[str, Any], Callable[[], bool]], None],
    heartbeat: Callable[[str], bool],
    visibility_seconds: int,
) -> Callable[[Received], None]:
    """Runs a state machine's callback step from `queue`, keeping its message hidden and
    its task alive while it works."""

    def run(message: Received) -> None:
        token = str(message.body.get("task_token", ""))

        def keepalive() -> bool:
            queue.retry_after(message.receipt, visibility_seconds)
            return heartbeat(token)

        # A step that raises stays on the queue and is delivered again (or dead-lettered);
        # the state machine's timeouts notice a worker that went away.
        handle(message.body, keepalive)
        queue.delete(message.receipt)

    return run


def training_handler(rt: Runtime) -> Callable[[Received], None]:
    jobs = rt.jobs
    return callback_handler(
        jobs.training_queue,
        jobs.worker.handle,
        jobs.callbacks.heartbeat,
        TRAINING_VISIBILITY_SECONDS,
    )


def batch_handler(rt: Runtime) -> Callable[[Received], None]:
    jobs = rt.jobs
    return callback_handler(
        jobs.batch_queue,
        jobs.batch_worker.handle,
        jobs.callbacks.heartbeat,
        BATCH_VISIBILITY_SECONDS,
    )


def webhook_handler(rt: Runtime) -> Callable[[Received], None]:
    jobs = rt.jobs

    def handle(message: Received) -> None:
        outcome = jobs.dispatcher.handle(message.body)
        if outcome.done:
            jobs.webhook_queue.delete(message.receipt)
        else:
            jobs.webhook_queue.retry_after(message.receipt, outcome.delay)

    return handle


def settlement_handler(rt: Runtime, meter: DynamoMeter) -> Callable[[Received], None]:
    def handle(message: Received) -> None:
        # One that still fails stays on the queue: visible again after its timeout.
        meter.replay(message.body)
        rt.settlement_queue.delete(message.receipt)

    return handle


class Relay:
    def __init__(self, rt: Runtime, every: float) -> None:
        self._rt = rt
        self._every = every
        self._next = 0.0

    def __call__(self) -> None:
        now = self._rt.clock.monotonic()
        if now >= self._next:
            self._next = now + self._every
            self._rt.jobs.dispatcher.relay_pending()


class Workers:
    def __init__(self, rt: Runtime, relay_every: float = RELAY_EVERY_SECONDS) -> None:
        self.runtime = rt
        self.training = QueueWorker(
            "training", rt.jobs.training_queue, training_handler(rt), TRAINING_VISIBILITY_SECONDS
        )
        self.batches = QueueWorker(
            "batches", rt.jobs.batch_queue, batch_handler(rt), BATCH_VISIBILITY_SECONDS
        )
        self.webhooks = QueueWorker(
            "webhooks",
            rt.jobs.webhook_queue,
            webhook_handler(rt),
            WEBHOOK_VISIBILITY_SECONDS,
            idle=Relay(rt, relay_every),
        )

        meter = rt.meter
        self.settlements = (
            QueueWorker(
                "settlements",
                rt.settlement_queue,
                settlement_handler(rt, meter),
                SETTLEMENT_VISIBILITY_SECONDS,
            )
            if rt.settings.settlement_queue_url and isinstance(meter, DynamoMeter)
            else None
        )

    @property
    def all(self) -> tuple[QueueWorker, ...]:
        optional = (self.settlements,) if self.settlements is not None else ()
        return (self.training, self.batches, self.webhooks, *optional)

    def start(self) -> Workers:
        for worker in self.all:
            worker.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        for worker in self.all:
            worker.stop()
        for worker in self.all:
            worker.join(timeout)

    def __enter__(self) -> Workers:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
