"""The local AWS resources of files, fine-tuning and webhooks, created in moto: the files
bucket, the training and webhook queues with their dead-letter queues, and the fine-tuning
state machine from the same ASL file CDK deploys (with the same substitutions).

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

ASL_PATH = Path(__file__).resolve().parents[4] / "infra" / "statemachines" / "fine_tuning.asl.json"
LOCAL_ACCOUNT = "123456789012"
TRAINING_MAX_RECEIVES = 5
TRAINING_VISIBILITY_SECONDS = 60


@dataclass(frozen=True)
class JobResources:
    bucket: str
    training_queue_url: str
    training_dlq_url: str
    webhook_queue_url: str
    webhook_dlq_url: str
    state_machine_arn: str

    def environment(self) -> dict[str, str]:
        return {
            "GANTRY_FILES_BUCKET": self.bucket,
            "GANTRY_TRAINING_QUEUE_URL": self.training_queue_url,
            "GANTRY_WEBHOOK_QUEUE_URL": self.webhook_queue_url,
            "GANTRY_FINE_TUNING_STATE_MACHINE_ARN": self.state_machine_arn,
        }

    def apply(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={
                "files_bucket": self.bucket,
                "training_queue_url": self.training_queue_url,
                "webhook_queue_url": self.webhook_queue_url,
                "fine_tuning_state_machine_arn": self.state_machine_arn,
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


def definition(substitutions: dict[str, str]) -> str:
    text = ASL_PATH.read_text()
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
    substitutions = {
        "TrainingQueueUrl": training,
        "WebhookQueueUrl": webhooks,
        "JobsTable": settings.jobs_table,
        "BedrockRoleArn": f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{prefix}-bedrock-customization",
    }
    sfn = client("stepfunctions", settings)
    name = f"{prefix}-fine-tuning"
    role = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{prefix}-fine-tuning"
    existing = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
    if name in existing:
        arn = existing[name]
        sfn.update_state_machine(stateMachineArn=arn, definition=definition(substitutions))
    else:
        arn = sfn.create_state_machine(
            name=name, definition=definition(substitutions), roleArn=role
        )["stateMachineArn"]
    return JobResources(bucket, training, training_dlq, webhooks, webhooks_dlq, arn)
