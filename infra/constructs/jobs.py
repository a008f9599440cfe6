"""Files, fine-tuning and webhooks: their API functions, the training and webhook queues with
their worker functions, and the fine-tuning state machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Aws, Duration, Fn
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from constructs import Construct

from gantry.domain.webhooks import DEFAULT_RETRY_SCHEDULE
from gantry.tables import TableSpec
from infra.constants import FILES_BUCKET_NAME, FUNCTIONS_DIR
from infra.constructs.queues import QueueWithDeadLetters
from infra.constructs.service_function import ServiceFunction, TableAccess
from infra.constructs.workflows import (
    ARTIFACT_PREFIX,
    FineTuningWorkflow,
    acknowledge_objects,
    allow_objects,
)
from infra.nag import acknowledge

RW = TableAccess.READ_WRITE
READ = TableAccess.READ
WORKER_TIMEOUT = Duration.minutes(15)
# Lambda's advice: a queue's visibility timeout of at least six times the function's.
TRAINING_VISIBILITY = Duration.minutes(90)
WEBHOOK_TIMEOUT = Duration.seconds(60)
TRAINING_MAX_RECEIVES = 5
# Long enough for the whole retry schedule (about 27 hours) plus margin.
WEBHOOK_RETENTION = Duration.days(4)
RELAY_RATE = Duration.minutes(1)
EXECUTIONS_FINDING = (
    "arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
    "<AWS::StackName>-fine-tuning:*"
)

FILES_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/files"),
    ("GET", "/v1/files"),
    ("GET", "/v1/files/{id}"),
    ("DELETE", "/v1/files/{id}"),
    ("GET", "/v1/files/{id}/content"),
)
FINE_TUNING_ROUTES: tuple[tuple[str, str], ...] = tuple(
    route
    for prefix in ("/v1/fine_tuning/jobs", "/v1/fine-tuning-jobs")
    for route in (
        ("POST", prefix),
        ("GET", prefix),
        ("GET", f"{prefix}/{{id}}"),
        ("GET", f"{prefix}/{{id}}/events"),
        ("POST", f"{prefix}/{{id}}/cancel"),
        ("GET", f"{prefix}/{{id}}/results"),
    )
)
WEBHOOKS_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("DELETE", "/v1/webhooks/{id}"),
    ("POST", "/v1/webhooks/{id}/test"),
    ("GET", "/v1/webhooks/{id}/deliveries"),
)


class GantryJobs(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        layers: Sequence[lambda_.ILayerVersion],
        tables: Mapping[str, dynamodb.ITable],
        table_specs: Mapping[str, TableSpec],
        pepper: Any,
        web_adapter: lambda_.ILayerVersion,
    ) -> None:
        super().__init__(scope, construct_id)
        files_bucket = s3.Bucket.from_bucket_name(self, "FilesBucket", Fn.sub(FILES_BUCKET_NAME))
        self.bucket = files_bucket
        self.jobs_table = tables["jobs"]
        self.jobs_spec = table_specs["jobs"]
        self.training = QueueWithDeadLetters(
            self,
            "Training",
            max_receives=TRAINING_MAX_RECEIVES,
            visibility_timeout=TRAINING_VISIBILITY,
            retention=Duration.days(4),
        )
        self.webhook_queue = QueueWithDeadLetters(
            self,
            "Webhooks",
            max_receives=len(DEFAULT_RETRY_SCHEDULE),
            visibility_timeout=Duration.seconds(6 * WEBHOOK_TIMEOUT.to_seconds()),
            retention=WEBHOOK_RETENTION,
        )
        self.workflow = FineTuningWorkflow(
            self,
            "FineTuning",
            training_queue=self.training.queue,
            webhook_queue=self.webhook_queue.queue,
            jobs_table=self.jobs_table,
            files_bucket=files_bucket,
        )
        machine = self.workflow.state_machine
        self.environment = {
            "GANTRY_FILES_BUCKET": files_bucket.bucket_name,
            "GANTRY_TRAINING_QUEUE_URL": self.training.queue.queue_url,
            "GANTRY_WEBHOOK_QUEUE_URL": self.webhook_queue.queue.queue_url,
            "GANTRY_FINE_TUNING_STATE_MACHINE_ARN": machine.state_machine_arn,
        }
        common: dict[str, Any] = {
            "layers": layers,
            "tables": tables,
            "table_specs": table_specs,
            "pepper": pepper,
            "environment": self.environment,
        }

        self.files = ServiceFunction(
            self,
            "Files",
            code_dir=FUNCTIONS_DIR / "files",
            handler="run.sh",
            description="Gantry files: upload, list, retrieve, delete, download (streamed)",
            # Downloads stream (buffered: 6 MB at most); past 150 MB they redirect to S3.
            web_adapter=web_adapter,
            table_access={"keys": RW, "jobs": RW},
            **common,
        )
        allow_objects(
            self.files.role,
            files_bucket,
            "files/",
            "s3:GetObject",
            "s3:PutObject",
            "s3:DeleteObject",
        )
        acknowledge_objects(self.files.role, "files/")

        self.fine_tuning = ServiceFunction(
            self,
            "FineTuningApi",
            code_dir=FUNCTIONS_DIR / "fine_tuning",
            handler="handler.handler",
            description="Gantry fine-tuning jobs: create, list, retrieve, events, cancel",
            table_access={"keys": RW, "jobs": RW},
            **common,
        )
        machine.grant_start_execution(self.fine_tuning.role)
        executions = (
            f"arn:{Aws.PARTITION}:states:{Aws.REGION}:{Aws.ACCOUNT_ID}:execution:"
            f"{Aws.STACK_NAME}-fine-tuning:*"
        )
        self.fine_tuning.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["states:StopExecution"], resources=[executions])
        )
        acknowledge(
            self.fine_tuning.role.node.find_child("DefaultPolicy"),
            f"AwsSolutions-IAM5[Resource::{EXECUTIONS_FINDING}]",
            "Cancelling a job stops its execution, which is named after the job at run time: "
            "the statement covers the executions of the fine-tuning state machine only.",
        )
        self.webhook_queue.queue.grant_send_messages(self.fine_tuning.role)

        self.webhooks = ServiceFunction(
            self,
            "WebhooksApi",
            code_dir=FUNCTIONS_DIR / "webhooks",
            handler="handler.handler",
            description="Gantry webhook endpoints: register, list, delete, test, deliveries",
            table_access={"keys": RW, "jobs": RW},
            **common,
        )
        self.webhook_queue.queue.grant_send_messages(self.webhooks.role)

        self.training_worker = ServiceFunction(
            self,
            "TrainingWorker",
            code_dir=FUNCTIONS_DIR / "training_worker",
            handler="handler.handler",
            description="Gantry training worker: the fine-tuning state machine's callback steps",
            table_access={"jobs": RW},
            timeout=WORKER_TIMEOUT,
            **common,
        )
        allow_objects(
            self.training_worker.role, files_bucket, "files/", "s3:GetObject", "s3:PutObject"
        )
        allow_objects(
            self.training_worker.role,
            files_bucket,
            ARTIFACT_PREFIX,
            "s3:GetObject",
            "s3:PutObject",
        )
        acknowledge_objects(self.training_worker.role, "files/", ARTIFACT_PREFIX)
        machine.grant_task_response(self.training_worker.role)
        # Training that would outlive the invocation continues in a new message.
        self.training.queue.grant_send_messages(self.training_worker.role)
        self.training_worker.function.add_event_source(
            sources.SqsEventSource(
                self.training.queue, batch_size=1, report_batch_item_failures=True
            )
        )

        self.webhook_worker = ServiceFunction(
            self,
            "WebhookWorker",
            code_dir=FUNCTIONS_DIR / "webhook_worker",
            handler="handler.handler",
            description="Gantry webhook worker: signed deliveries with retries, quota relay",
            table_access={"jobs": RW, "usage": RW},
            timeout=WEBHOOK_TIMEOUT,
            **common,
        )
        self.webhook_queue.queue.grant_send_messages(self.webhook_worker.role)
        self.webhook_worker.function.add_event_source(
            sources.SqsEventSource(
                self.webhook_queue.queue, batch_size=10, report_batch_item_failures=True
            )
        )
        events.Rule(
            self,
            "QuotaEventRelay",
            schedule=events.Schedule.rate(RELAY_RATE),
            targets=[targets.LambdaFunction(self.webhook_worker.function)],
            description="Relay pending quota.threshold_crossed events to the webhook queue",
        )

    @property
    def streaming_routes(self) -> list[tuple[str, str, lambda_.IFunction]]:
        return [(m, p, self.files.function) for m, p in FILES_ROUTES]

    @property
    def routes(self) -> list[tuple[str, str, lambda_.IFunction]]:
        return [
            *((m, p, self.fine_tuning.function) for m, p in FINE_TUNING_ROUTES),
            *((m, p, self.webhooks.function) for m, p in WEBHOOKS_ROUTES),
        ]

    def serve_fine_tuned_models(self, *functions: ServiceFunction) -> None:
        """Let inference functions load fine-tuned models: read the jobs table and the
        trained artifacts, and know the bucket."""
        for function in functions:
            resources = [self.jobs_table.table_arn]
            resources += [
                f"{self.jobs_table.table_arn}/index/{index.name}"
                for index in self.jobs_spec.indexes
            ]
            function.role.add_to_principal_policy(
                iam.PolicyStatement(actions=READ.actions, resources=resources)
            )
            allow_objects(function.role, self.bucket, ARTIFACT_PREFIX, "s3:GetObject")
            acknowledge_objects(function.role, ARTIFACT_PREFIX)
            function.function.add_environment("GANTRY_FILES_BUCKET", self.bucket.bucket_name)
