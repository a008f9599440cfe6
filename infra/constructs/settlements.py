"""The settlement spool: the queue where the meter puts the settlements (and reservation
releases) it could not write to DynamoDB after its retries, and the worker that replays them.

A settlement kept only in a function's memory is lost when Lambda freezes or recycles it;
on the queue it survives until the usage and quotas tables take writes again. The queue's
visibility timeout is the backoff between replays, and its receive count rides out an
outage of tens of minutes before a message is dead-lettered. The worker's low maximum
concurrency keeps the replay from stampeding a table that is recovering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from gantry.tables import TableSpec
from infra.constants import FUNCTIONS_DIR
from infra.constructs.queues import QueueWithDeadLetters
from infra.constructs.service_function import ServiceFunction, TableAccess

RW = TableAccess.READ_WRITE
SETTLEMENT_QUEUE_ENV = "GANTRY_SETTLEMENT_QUEUE_URL"
WORKER_TIMEOUT = Duration.seconds(60)
# Lambda's advice: a queue's visibility timeout of at least six times the function's.
SETTLEMENT_VISIBILITY = Duration.seconds(6 * WORKER_TIMEOUT.to_seconds())
# Ten receives six minutes apart: about an hour of replays before a message dead-letters.
SETTLEMENT_MAX_RECEIVES = 10
SETTLEMENT_RETENTION = Duration.days(14)
SETTLEMENT_BATCH_SIZE = 10
WORKER_MAX_CONCURRENCY = 2


class GantrySettlements(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layers: Sequence[lambda_.ILayerVersion],
        tables: Mapping[str, dynamodb.ITable],
        table_specs: Mapping[str, TableSpec],
        pepper: secretsmanager.ISecret,
    ) -> None:
        super().__init__(scope, construct_id)
        self.queue = QueueWithDeadLetters(
            self,
            "Spool",
            max_receives=SETTLEMENT_MAX_RECEIVES,
            visibility_timeout=SETTLEMENT_VISIBILITY,
            retention=SETTLEMENT_RETENTION,
        )
        self.worker = ServiceFunction(
            self,
            "SettlementWorker",
            code_dir=FUNCTIONS_DIR / "settlement_worker",
            handler="handler.handler",
            description="Gantry settlement worker: replays spooled settlements and releases",
            # The ledger item and hourly counters (usage), the refunds and leases (quotas).
            table_access={"quotas": RW, "usage": RW},
            layers=layers,
            tables=tables,
            table_specs=table_specs,
            pepper=pepper,
            timeout=WORKER_TIMEOUT,
        )
        self.worker.function.add_event_source(
            sources.SqsEventSource(
                self.queue.queue,
                batch_size=SETTLEMENT_BATCH_SIZE,
                report_batch_item_failures=True,
                max_concurrency=WORKER_MAX_CONCURRENCY,
            )
        )

    def spool_for(self, *functions: ServiceFunction) -> None:
        """Let metering functions put the settlements they cannot write on the queue."""
        for function in functions:
            function.function.add_environment(SETTLEMENT_QUEUE_ENV, self.queue.queue.queue_url)
            self.queue.queue.grant_send_messages(function.role)
