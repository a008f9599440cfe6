"""Wiring for files, fine-tuning, batches and webhooks: built on first use, once per
runtime."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from gantry.adapters.aws import client
from gantry.adapters.bedrock_customization import BedrockCustomization
from gantry.adapters.dynamodb_batches import DynamoBatchStore
from gantry.adapters.dynamodb_files import DynamoFileIndex
from gantry.adapters.dynamodb_jobs import DynamoJobStore
from gantry.adapters.dynamodb_usage_events import DynamoPendingEvents
from gantry.adapters.dynamodb_webhooks import DynamoWebhookStore
from gantry.adapters.local.fine_tuning import LocalTrainer
from gantry.adapters.local.provider import LocalProvider
from gantry.adapters.s3_blobs import S3BlobStore
from gantry.adapters.sqs_queue import SqsQueue
from gantry.adapters.stepfunctions_workflow import StepFunctionsCallbacks, StepFunctionsWorkflow
from gantry.adapters.webhook_http import HttpSender, SystemResolver
from gantry.domain.batch_service import BatchService, BatchSettings, BatchWorker
from gantry.domain.file_service import FileService
from gantry.domain.fine_tuning import (
    FineTunedModels,
    FineTuningService,
    FineTuningWorker,
    JobSettings,
    ModelRegistrations,
)
from gantry.domain.webhook_service import AddressPolicy, WebhookDispatcher, WebhookService
from gantry.domain.webhooks import parse_schedule
from gantry.job_ports import LineRunner, Resolver, Sender, Trainer

if TYPE_CHECKING:
    from gantry.runtime import Runtime


class JobComponents:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings

    # --- adapters -----------------------------------------------------------------------

    @cached_property
    def blobs(self) -> S3BlobStore:
        return S3BlobStore(client("s3", self.settings), self.settings.files_bucket)

    @cached_property
    def job_store(self) -> DynamoJobStore:
        return DynamoJobStore(client("dynamodb", self.settings), self.settings.jobs_table)

    @cached_property
    def webhook_store(self) -> DynamoWebhookStore:
        return DynamoWebhookStore(client("dynamodb", self.settings), self.settings.jobs_table)

    @cached_property
    def training_queue(self) -> SqsQueue:
        return SqsQueue(client("sqs", self.settings), self.settings.training_queue_url, "training")

    @cached_property
    def batch_store(self) -> DynamoBatchStore:
        return DynamoBatchStore(client("dynamodb", self.settings), self.settings.jobs_table)

    @cached_property
    def batch_queue(self) -> SqsQueue:
        return SqsQueue(client("sqs", self.settings), self.settings.batch_queue_url, "batch")

    @cached_property
    def webhook_queue(self) -> SqsQueue:
        return SqsQueue(client("sqs", self.settings), self.settings.webhook_queue_url, "webhooks")

    @cached_property
    def callbacks(self) -> StepFunctionsCallbacks:
        return StepFunctionsCallbacks(client("stepfunctions", self.settings))

    @cached_property
    def trainers(self) -> dict[str, Trainer]:
        trainers: dict[str, Trainer] = {"bedrock": BedrockCustomization()}
        local = self.runtime.providers.get("local")
        if isinstance(local, LocalProvider):
            trainers["local"] = LocalTrainer(local)
        return trainers

    @cached_property
    def resolver(self) -> Resolver:
        return SystemResolver()

    @cached_property
    def sender(self) -> Sender:
        return HttpSender(self.settings.webhook_timeout_seconds)

    @cached_property
    def address_policy(self) -> AddressPolicy:
        return AddressPolicy(allow_loopback=self.settings.env == "local")

    @cached_property
    def job_settings(self) -> JobSettings:
        s = self.settings
        return JobSettings(
            retention_seconds=s.job_retention_days * 86_400,
            heartbeat_seconds=s.job_heartbeat_seconds,
            validate_timeout_seconds=s.job_step_timeout_seconds,
            train_timeout_seconds=s.job_train_timeout_seconds,
            evaluate_timeout_seconds=s.job_step_timeout_seconds,
            bedrock_poll_seconds=s.bedrock_poll_seconds,
        )

    @cached_property
    def batch_settings(self) -> BatchSettings:
        s = self.settings
        return BatchSettings(
            retention_seconds=s.job_retention_days * 86_400,
            chunk_size=s.batch_chunk_size,
            max_concurrency=s.batch_max_concurrency,
            line_seconds=s.request_timeout_seconds,
        )

    @cached_property
    def line_runner(self) -> LineRunner:
        from gantry.http.batch_lines import AppLineRunner  # the API app, only where lines run

        return AppLineRunner(self.runtime)

    # --- services -----------------------------------------------------------------------

    @cached_property
    def files(self) -> FileService:
        index = DynamoFileIndex(client("dynamodb", self.settings), self.settings.jobs_table)
        return FileService(
            index,
            self.blobs,
            self.runtime.clock,
            self.settings.max_file_bytes,
            self.settings.max_streamed_download_bytes,
        )

    @cached_property
    def fine_tuning(self) -> FineTuningService:
        return FineTuningService(
            jobs=self.job_store,
            files=self.files,
            workflow=StepFunctionsWorkflow(
                client("stepfunctions", self.settings),
                self.settings.fine_tuning_state_machine_arn,
                "fine-tuning",
            ),
            registry=self.runtime.registry,
            trainers=self.trainers,
            webhook_queue=self.webhook_queue,
            clock=self.runtime.clock,
            settings=self.job_settings,
        )

    @cached_property
    def worker(self) -> FineTuningWorker:
        return FineTuningWorker(
            jobs=self.job_store,
            files=self.files,
            blobs=self.blobs,
            registry=self.runtime.registry,
            trainers=self.trainers,
            callbacks=self.callbacks,
            clock=self.runtime.clock,
            queue=self.training_queue,
        )

    @cached_property
    def batches(self) -> BatchService:
        return BatchService(
            batches=self.batch_store,
            files=self.files,
            workflow=StepFunctionsWorkflow(
                client("stepfunctions", self.settings),
                self.settings.batch_state_machine_arn,
                "batch",
            ),
            clock=self.runtime.clock,
            settings=self.batch_settings,
        )

    @cached_property
    def batch_worker(self) -> BatchWorker:
        return BatchWorker(
            batches=self.batch_store,
            files=self.files,
            blobs=self.blobs,
            runner=self.line_runner,
            callbacks=self.callbacks,
            queue=self.batch_queue,
            clock=self.runtime.clock,
            settings=self.batch_settings,
        )

    @cached_property
    def fine_tuned(self) -> FineTunedModels:
        store = self.job_store
        return FineTunedModels(
            ModelRegistrations(store, store.find_model),
            store.list_models,
            self.runtime.registry,
            self.blobs,
            self.trainers,
        )

    @cached_property
    def webhooks(self) -> WebhookService:
        return WebhookService(
            store=self.webhook_store,
            queue=self.webhook_queue,
            resolver=self.resolver,
            pepper=self.runtime.pepper,
            clock=self.runtime.clock,
            policy=self.address_policy,
        )

    @cached_property
    def dispatcher(self) -> WebhookDispatcher:
        return WebhookDispatcher(
            store=self.webhook_store,
            queue=self.webhook_queue,
            resolver=self.resolver,
            sender=self.sender,
            secret=self.webhooks.secret,
            clock=self.runtime.clock,
            policy=self.address_policy,
            schedule=parse_schedule(self.settings.webhook_retry_schedule),
            pending=DynamoPendingEvents(
                client("dynamodb", self.settings), self.settings.usage_table
            ),
        )
