"""The state machines, each from its file in `infra/statemachines/` (the file the local
runtime runs in moto) with the queue URLs, table name (and for fine-tuning the Bedrock
role) substituted, and a role that can do exactly what its states do."""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constants import REPO_ROOT
from infra.nag import acknowledge

ASL_PATH = REPO_ROOT / "infra" / "statemachines" / "fine_tuning.asl.json"
# No execution outlives this; job items expire this long plus the retention after creation.
MAX_JOB_DURATION = Duration.days(7)
ARTIFACT_PREFIX = "fine-tuning/"
BEDROCK_FINDINGS = (
    "arn:<AWS::Partition>:bedrock:<AWS::Region>:<AWS::AccountId>:model-customization-job/*",
    "arn:<AWS::Partition>:bedrock:<AWS::Region>::foundation-model/*",
    "arn:<AWS::Partition>:bedrock:<AWS::Region>:<AWS::AccountId>:custom-model/*",
)
OBJECT_FINDING = (
    "AwsSolutions-IAM5[Resource::arn:{partition}:s3:::"
    "gantry-files-<AWS::AccountId>-<AWS::Region>/{prefix}*]"
)
# `cdk synth` renders the partition as a literal where the unit tests see the token.
PARTITIONS = ("<AWS::Partition>", "aws")
BATCH_ASL_PATH = REPO_ROOT / "infra" / "statemachines" / "batch.asl.json"
# The 24-hour completion window plus the time to finalize what ran in it.
MAX_BATCH_DURATION = Duration.hours(26)


def allow_objects(role: iam.IRole, bucket: s3.IBucket, prefix: str, *actions: str) -> None:
    """Object-level S3 actions under one key prefix, nothing on the bucket itself."""
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=list(actions), resources=[bucket.arn_for_objects(f"{prefix}*")])
    )


def acknowledge_objects(role: iam.Role, *prefixes: str) -> None:
    policy = role.node.find_child("DefaultPolicy")
    for prefix in prefixes:
        for partition in PARTITIONS:
            acknowledge(
                policy,
                OBJECT_FINDING.format(partition=partition, prefix=prefix),
                f"Objects are named per file or job at run time: object actions are limited "
                f"to the '{prefix}' prefix of the files bucket.",
            )


def bounded_definition(path: Path, timeout: Duration) -> sfn.DefinitionBody:
    """The ASL file with a top-level `TimeoutSeconds`: CDK applies a state machine's
    `timeout` to definitions it builds, not to one given as a string."""
    definition = json.loads(path.read_text())
    definition["TimeoutSeconds"] = int(timeout.to_seconds())
    return sfn.DefinitionBody.from_string(json.dumps(definition, indent=2))


def allow_sends(role: iam.IRole, *queues: sqs.IQueue) -> None:
    """sqs:SendMessage to these queues, and use of their keys if they have their own."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["sqs:SendMessage"], resources=[queue.queue_arn for queue in queues]
        )
    )
    for queue in queues:
        if queue.encryption_master_key is not None:
            queue.encryption_master_key.grant_encrypt_decrypt(role)


def acknowledge_log_delivery(role: iam.Role) -> None:
    acknowledge(
        role.node.find_child("DefaultPolicy"),
        "AwsSolutions-IAM5[Resource::*]",
        "Step Functions log delivery (logs:*LogDelivery*) and X-Ray tracing actions do not "
        "support resource-level permissions, so CDK grants them on '*'.",
    )


def asl_state_machine(
    scope: Construct,
    path: Path,
    duration: Duration,
    name: str,
    description: str,
    substitutions: dict[str, str],
) -> tuple[logs.LogGroup, iam.Role, sfn.StateMachine]:
    """A standard state machine from an ASL file, bounded to `duration`, traced and logged
    at level ALL, with a role of its own that the caller grants each state's actions."""
    log_group = logs.LogGroup(
        scope,
        "Logs",
        retention=logs.RetentionDays.ONE_MONTH,
        removal_policy=RemovalPolicy.DESTROY,
    )
    role = iam.Role(
        scope,
        "Role",
        assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
        description=description,
    )
    machine = sfn.StateMachine(
        scope,
        "StateMachine",
        definition_body=bounded_definition(path, duration),
        definition_substitutions=substitutions,
        state_machine_name=f"{Aws.STACK_NAME}-{name}",
        state_machine_type=sfn.StateMachineType.STANDARD,
        tracing_enabled=True,
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL),
        role=role,
    )
    return log_group, role, machine


class FineTuningWorkflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        training_queue: sqs.IQueue,
        webhook_queue: sqs.IQueue,
        jobs_table: dynamodb.ITable,
        files_bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        # Bedrock reads the training file and writes its outputs with a role of its own.
        self.bedrock_role = iam.Role(
            self,
            "BedrockCustomizationRole",
            assumed_by=iam.ServicePrincipal(
                "bedrock.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            ),
            description="Gantry: Bedrock model customization reads files, writes results",
        )
        allow_objects(self.bedrock_role, files_bucket, "files/", "s3:GetObject")
        allow_objects(self.bedrock_role, files_bucket, ARTIFACT_PREFIX, "s3:PutObject")

        self.log_group, self.role, self.state_machine = asl_state_machine(
            self,
            ASL_PATH,
            MAX_JOB_DURATION,
            "fine-tuning",
            "Gantry fine-tuning state machine",
            {
                "TrainingQueueUrl": training_queue.queue_url,
                "WebhookQueueUrl": webhook_queue.queue_url,
                "JobsTable": jobs_table.table_name,
                "BedrockRoleArn": self.bedrock_role.role_arn,
            },
        )
        allow_sends(self.role, training_queue, webhook_queue)
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem"],
                resources=[jobs_table.table_arn],
            )
        )
        customization_jobs = (
            f"arn:{Aws.PARTITION}:bedrock:{Aws.REGION}:{Aws.ACCOUNT_ID}:model-customization-job/*"
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "bedrock:CreateModelCustomizationJob",
                    "bedrock:GetModelCustomizationJob",
                    "bedrock:StopModelCustomizationJob",
                ],
                resources=[
                    customization_jobs,
                    f"arn:{Aws.PARTITION}:bedrock:{Aws.REGION}::foundation-model/*",
                    f"arn:{Aws.PARTITION}:bedrock:{Aws.REGION}:{Aws.ACCOUNT_ID}:custom-model/*",
                ],
            )
        )
        self.bedrock_role.grant_pass_role(self.role)
        policy = self.role.node.find_child("DefaultPolicy")
        for finding in BEDROCK_FINDINGS:
            acknowledge(
                policy,
                f"AwsSolutions-IAM5[Resource::{finding}]",
                "Bedrock customization jobs, custom models and the base models a job starts "
                "from are named at run time (one per job): the statement covers that ARN "
                "pattern in this account and region only.",
            )
        acknowledge_log_delivery(self.role)
        acknowledge_objects(self.bedrock_role, "files/", ARTIFACT_PREFIX)


class BatchWorkflow(Construct):
    """Validate, run the chunks (a Map of callback tasks on the batch queue), finalize, then
    record the outcome on the batch and queue its webhook event."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        batch_queue: sqs.IQueue,
        webhook_queue: sqs.IQueue,
        jobs_table: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group, self.role, self.state_machine = asl_state_machine(
            self,
            BATCH_ASL_PATH,
            MAX_BATCH_DURATION,
            "batches",
            "Gantry batch state machine",
            {
                "BatchQueueUrl": batch_queue.queue_url,
                "WebhookQueueUrl": webhook_queue.queue_url,
                "JobsTable": jobs_table.table_name,
            },
        )
        allow_sends(self.role, batch_queue, webhook_queue)
        self.role.add_to_principal_policy(
            iam.PolicyStatement(actions=["dynamodb:UpdateItem"], resources=[jobs_table.table_arn])
        )
        acknowledge_log_delivery(self.role)
