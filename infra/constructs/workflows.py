"""The fine-tuning state machine, from `infra/statemachines/fine_tuning.asl.json` (the file
the local runtime runs in moto), with the queue URLs, table name and Bedrock role
substituted, and a role that can do exactly what its states do."""

from __future__ import annotations

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

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description="Gantry fine-tuning state machine",
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_string(ASL_PATH.read_text()),
            definition_substitutions={
                "TrainingQueueUrl": training_queue.queue_url,
                "WebhookQueueUrl": webhook_queue.queue_url,
                "JobsTable": jobs_table.table_name,
                "BedrockRoleArn": self.bedrock_role.role_arn,
            },
            state_machine_name=f"{Aws.STACK_NAME}-fine-tuning",
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=MAX_JOB_DURATION,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL),
            role=self.role,
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sqs:SendMessage"],
                resources=[training_queue.queue_arn, webhook_queue.queue_arn],
            )
        )
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["dynamodb:UpdateItem", "dynamodb:PutItem"],
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
        for queue in (training_queue, webhook_queue):
            if queue.encryption_master_key is not None:
                queue.encryption_master_key.grant_encrypt_decrypt(self.role)
        policy = self.role.node.find_child("DefaultPolicy")
        for finding in BEDROCK_FINDINGS:
            acknowledge(
                policy,
                f"AwsSolutions-IAM5[Resource::{finding}]",
                "Bedrock customization jobs, custom models and the base models a job starts "
                "from are named at run time (one per job): the statement covers that ARN "
                "pattern in this account and region only.",
            )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "Step Functions log delivery (logs:*LogDelivery*) and X-Ray tracing actions do not "
            "support resource-level permissions, so CDK grants them on '*'.",
        )
        acknowledge_objects(self.bedrock_role, "files/", ARTIFACT_PREFIX)
