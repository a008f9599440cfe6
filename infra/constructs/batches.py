"""Batches: the batches API function, the batch queue (with its dead-letter queue) and the
worker that consumes it, and the batch state machine.

The worker runs each line through the API app in its own process, so it may do what the
model-calling functions do. Its reserved concurrency, and the same maximum concurrency on
its event source, keep batch work behind interactive traffic: messages wait on the queue
instead of taking the account's concurrency (or being throttled towards the dead-letter
queue).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from gantry.tables import TableSpec
from infra.constants import FUNCTIONS_DIR
from infra.constructs.jobs import GantryJobs
from infra.constructs.queues import QueueWithDeadLetters
from infra.constructs.service_function import ServiceFunction, TableAccess
from infra.constructs.workflows import (
    MAX_BATCH_DURATION,
    BatchWorkflow,
    acknowledge_objects,
    allow_objects,
)

RW = TableAccess.READ_WRITE
READ = TableAccess.READ
WORKER_CONCURRENCY_CONTEXT = "gantry:batchWorkerConcurrency"
DEFAULT_WORKER_CONCURRENCY = 2
# The bounds of an SQS event source's maximum concurrency.
WORKER_CONCURRENCY_RANGE = range(2, 1001)
WORKER_TIMEOUT = Duration.minutes(15)
# One batch line's budget: a chunk continues in a new message while its invocation has more
# than this (plus 30 s) left, so each invocation does at least 10 minutes of lines.
LINE_BUDGET_SECONDS = 240
# Lambda's advice: a queue's visibility timeout of at least six times the function's.
BATCH_VISIBILITY = Duration.minutes(90)
BATCH_MAX_RECEIVES = 5
FILES_PREFIX = "files/"
BATCH_PREFIX = "batches/"

BATCH_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/{id}"),
    ("POST", "/v1/batches/{id}/cancel"),
)


def worker_concurrency(value: object) -> int:
    """The batch worker's concurrency, from `-c gantry:batchWorkerConcurrency=<n>`."""
    if value is None:
        return DEFAULT_WORKER_CONCURRENCY
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) not in WORKER_CONCURRENCY_RANGE:
        raise ValueError(
            f"{WORKER_CONCURRENCY_CONTEXT} must be a whole number from "
            f"{WORKER_CONCURRENCY_RANGE.start} to {WORKER_CONCURRENCY_RANGE.stop - 1}, "
            f"not {value!r}"
        )
    return int(text)


class GantryBatches(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        jobs: GantryJobs,
        layers: Sequence[lambda_.ILayerVersion],
        tables: Mapping[str, dynamodb.ITable],
        table_specs: Mapping[str, TableSpec],
        pepper: secretsmanager.ISecret,
    ) -> None:
        super().__init__(scope, construct_id)
        bucket = jobs.bucket
        webhook_queue = jobs.webhook_queue.queue
        self.queue = QueueWithDeadLetters(
            self,
            "Requests",
            max_receives=BATCH_MAX_RECEIVES,
            visibility_timeout=BATCH_VISIBILITY,
            # No message outlives the execution that sent it.
            retention=MAX_BATCH_DURATION,
        )
        self.workflow = BatchWorkflow(
            self,
            "Workflow",
            batch_queue=self.queue.queue,
            webhook_queue=webhook_queue,
            jobs_table=jobs.jobs_table,
        )
        machine = self.workflow.state_machine
        common: dict[str, Any] = {
            "layers": layers,
            "tables": tables,
            "table_specs": table_specs,
            "pepper": pepper,
            "environment": {
                **jobs.environment,
                "GANTRY_BATCH_QUEUE_URL": self.queue.queue.queue_url,
                "GANTRY_BATCH_STATE_MACHINE_ARN": machine.state_machine_arn,
            },
        }

        self.api_function = ServiceFunction(
            self,
            "BatchesApi",
            code_dir=FUNCTIONS_DIR / "batches",
            handler="handler.handler",
            description="Gantry batches: create, list, retrieve, cancel",
            # POSTs accept Idempotency-Key (idempotency)
            table_access={"keys": RW, "jobs": RW, "idempotency": RW},
            **common,
        )
        # Creating, reading and cancelling a batch reads file metadata only (jobs), no objects.
        machine.grant_start_execution(self.api_function.role)

        concurrency = worker_concurrency(self.node.try_get_context(WORKER_CONCURRENCY_CONTEXT))
        self.worker = ServiceFunction(
            self,
            "BatchWorker",
            code_dir=FUNCTIONS_DIR / "batch_worker",
            handler="handler.handler",
            description="Gantry batch worker: the batch state machine's steps, lines in-process",
            # A line runs as the key that created the batch (keys: read, never its last use),
            # and is admitted, cached and settled as an interactive request is (it sends no
            # Idempotency-Key); the batch, its chunks and its result files are in jobs.
            table_access={
                "keys": READ,
                "quotas": RW,
                "usage": RW,
                "cache": RW,
                "jobs": RW,
            },
            timeout=WORKER_TIMEOUT,
            reserved_concurrency=concurrency,
            request_budget=LINE_BUDGET_SECONDS,
            **common,
        )
        # Input files are read from files/, chunk results kept under batches/ until the
        # output and error files are written to files/ (in parts, when they are large).
        allow_objects(self.worker.role, bucket, BATCH_PREFIX, "s3:GetObject", "s3:PutObject")
        allow_objects(
            self.worker.role,
            bucket,
            FILES_PREFIX,
            "s3:GetObject",
            "s3:PutObject",
            "s3:AbortMultipartUpload",
        )
        acknowledge_objects(self.worker.role, FILES_PREFIX, BATCH_PREFIX)
        machine.grant_task_response(self.worker.role)
        # A chunk that would outlive the invocation continues in a new message.
        self.queue.queue.grant_send_messages(self.worker.role)
        self.worker.function.add_event_source(
            sources.SqsEventSource(
                self.queue.queue,
                batch_size=1,
                report_batch_item_failures=True,
                max_concurrency=concurrency,
            )
        )

    @property
    def routes(self) -> list[tuple[str, str, lambda_.IFunction]]:
        return [(m, p, self.api_function.function) for m, p in BATCH_ROUTES]
