"""The local AWS resources of files, fine-tuning, batches, webhooks and the metering spool,
created in moto: the files bucket, the training, batch, webhook and settlement queues with
their dead-letter queues, and the fine-tuning and batch state machines from the same ASL
files CDK deploys (with the same substitutions).

moto runs a state machine only when told to (`execute_state_machine`), and its tasks call
AWS at `localhost:$MOTO_PORT`, so both are set for the server the runtime uses.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantry.adapters.aws import client
from gantry.config import Settings
from gantry.domain.webhooks import parse_schedule

STATE_MACHINES = Path(__file__).resolve().parents[4] / "infra" / "statemachines"
ASL_PATH = STATE_MACHINES / "fine_tuning.asl.json"
BATCH_ASL_PATH = STATE_MACHINES / "batch.asl.json"
LOCAL_ACCOUNT = "123456789012"
TRAINING_MAX_RECEIVES = 5
TRAINING_VISIBILITY_SECONDS = 60
BATCH_MAX_RECEIVES = 5
BATCH_VISIBILITY_SECONDS = 60
SETTLEMENT_MAX_RECEIVES = 10
SETTLEMENT_VISIBILITY_SECONDS = 30


@dataclass(frozen=True)
class JobResources:
    bucket: str
    training_queue_url: str
    training_dlq_url: str
    webhook_queue_url: str
    webhook_dlq_url: str
    state_machine_arn: str
    batch_queue_url: str
    batch_dlq_url: str
    batch_state_machine_arn: str
    settlement_queue_url: str
    settlement_dlq_url: str

    def environment(self) -> dict[str, str]:
        return {
            "GANTRY_FILES_BUCKET": self.bucket,
            "GANTRY_TRAINING_QUEUE_URL": self.training_queue_url,
            "GANTRY_WEBHOOK_QUEUE_URL": self.webhook_queue_url,
            "GANTRY_FINE_TUNING_STATE_MACHINE_ARN": self.state_machine_arn,
            "GANTRY_BATCH_QUEUE_URL": self.batch_queue_url,
            "GANTRY_BATCH_STATE_MACHINE_ARN": self.batch_state_machine_arn,
            "GANTRY_SETTLEMENT_QUEUE_URL": self.settlement_queue_url,
        }

    def apply(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={
                "files_bucket": self.bucket,
                "training_queue_url": self.training_queue_url,
                "webhook_queue_url": self.webhook_queue_url,
                "fine_tuning_state_machine_arn": self.state_machine_arn,
                "batch_queue_url": self.batch_queue_url,
                "batch_state_machine_arn": self.batch_state_machine_arn,
                "settlement_queue_url": self.settlement_queue_url,
            }
        )


def enable_state_machines(endpoint_url: str) -> None:
    os.environ["MOTO_PORT"] = endpoint_url.rsplit(":", 1)[1].rstrip("/")
    body = json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode()
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/config",
        data=body,
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def definition(substitutions: dict[str, str], path: Path = ASL_PATH) -> str:
    text = path.read_text()
    for name, value in substitutions.items():
        text = text.replace("${" + name + "}", value)
    return text


def _queue(sqs: Any, name: str, max_receives: int, visibility: int) -> tuple[str, str]:
    dlq = sqs.create_queue(
        QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": "1209600"}
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "RedrivePolicy": json.dumps(redrive),
            "VisibilityTimeout": str(visibility),
            "MessageRetentionPeriod": "345600",
        },
    )["QueueUrl"]
    return url, dlq


def provision(settings: Settings, prefix: str = "gantry") -> JobResources:
    """Create (or find) the bucket, queues and state machine; enable their execution."""
    if settings.aws_endpoint_url:
        enable_state_machines(settings.aws_endpoint_url)
    s3 = client("s3", settings)
    bucket = f"{prefix}-files"
    s3.create_bucket(Bucket=bucket)
    sqs = client("sqs", settings)
    training, training_dlq = _queue(
        sqs, f"{prefix}-training", TRAINING_MAX_RECEIVES, TRAINING_VISIBILITY_SECONDS
    )
    attempts = len(parse_schedule(settings.webhook_retry_schedule))
    webhooks, webhooks_dlq = _queue(sqs, f"{prefix}-webhooks", attempts, 30)
    batches, batches_dlq = _queue(
        sqs, f"{prefix}-batch", BATCH_MAX_RECEIVES, BATCH_VISIBILITY_SECONDS
    )
    settlements, settlements_dlq = _queue(
        sqs, f"{prefix}-settlements", SETTLEMENT_MAX_RECEIVES, SETTLEMENT_VISIBILITY_SECONDS
    )
    sfn = client("stepfunctions", settings)
    fine_tuning = _state_machine(
        sfn,
        f"{prefix}-fine-tuning",
        definition(
            {
                "TrainingQueueUrl": training,
                "WebhookQueueUrl": webhooks,
                "JobsTable": settings.jobs_table,
                "BedrockRoleArn": f"arn:aws:iam::{LOCAL_ACCOUNT}:role/"
                f"{prefix}-bedrock-customization",
            }
        ),
    )
    batch = _state_machine(
        sfn,
        f"{prefix}-batch",
        definition(
            {
                "BatchQueueUrl": batches,
                "WebhookQueueUrl": webhooks,
                "JobsTable": settings.jobs_table,
            },
            BATCH_ASL_PATH,
        ),
    )
    return JobResources(
        bucket,
        training,
        training_dlq,
        webhooks,
        webhooks_dlq,
        fine_tuning,
        batches,
        batches_dlq,
        batch,
        settlements,
        settlements_dlq,
    )


def _state_machine(sfn: Any, name: str, text: str) -> str:
    """Create the state machine, or update the one of that name; its ARN."""
    existing = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
    if name in existing:
        sfn.update_state_machine(stateMachineArn=existing[name], definition=text)
        return str(existing[name])
    role = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{name}"
    return str(
        sfn.create_state_machine(name=name, definition=text, roleArn=role)["stateMachineArn"]
    )
