"""`ServiceFunction`: a Gantry Lambda function with the platform's defaults and its own role."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from pathlib import Path

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from gantry.tables import TableSpec
from infra.constants import (
    ASSET_EXCLUDES,
    BUFFERED_TIMEOUT_SECONDS,
    FUNCTION_LOG_RETENTION,
    FUNCTION_MEMORY_MB,
    POWERTOOLS_LOG_LEVEL,
    POWERTOOLS_METRICS_NAMESPACE,
    POWERTOOLS_SERVICE_NAME,
    STREAMING_TIMEOUT_SECONDS,
    WEB_ADAPTER_PORT,
)
from infra.nag import acknowledge

# Item-level actions only: no Scan, no streams, no table management.
TABLE_READ_ACTIONS: tuple[str, ...] = (
    "dynamodb:BatchGetItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:Query",
)
TABLE_WRITE_ACTIONS: tuple[str, ...] = (
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
)

# The adapter starts the handler script, waits for /health, then proxies each invocation
# to the app and streams its response back.
WEB_ADAPTER_ENVIRONMENT: dict[str, str] = {
    "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
    "AWS_LWA_INVOKE_MODE": "response_stream",
    "AWS_LWA_PORT": WEB_ADAPTER_PORT,
    "PORT": WEB_ADAPTER_PORT,
    "AWS_LWA_READINESS_CHECK_PATH": "/health",
    # Not started by Lambda's Python runtime, whose stdout reaches the logs line by line:
    # unbuffered, so logs and embedded metrics arrive as they are written.
    "PYTHONUNBUFFERED": "1",
}


class TableAccess(enum.Enum):
    READ = "read"
    READ_WRITE = "read_write"

    @property
    def actions(self) -> list[str]:
        if self is TableAccess.READ:
            return list(TABLE_READ_ACTIONS)
        return [*TABLE_READ_ACTIONS, *TABLE_WRITE_ACTIONS]


class ServiceFunction(Construct):
    """Python 3.12 on arm64, X-Ray tracing, its own log group and a least-privilege role.

    Every function gets every table name in its environment (settings are uniform), but
    its role may only touch the tables listed in `table_access`, plus reading the pepper.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code_dir: Path,
        handler: str,
        description: str,
        layers: Sequence[lambda_.ILayerVersion],
        tables: Mapping[str, dynamodb.ITable],
        table_specs: Mapping[str, TableSpec],
        table_access: Mapping[str, TableAccess],
        pepper: secretsmanager.ISecret,
        memory_size: int = FUNCTION_MEMORY_MB,
        timeout: Duration | None = None,
        environment: Mapping[str, str] | None = None,
        reserved_concurrency: int | None = None,
        request_budget: int | None = None,
        web_adapter: lambda_.ILayerVersion | None = None,
    ) -> None:
        """With `web_adapter`, the function streams: `handler` is a script that starts the
        app under uvicorn, and the AWS Lambda Web Adapter relays each chunk it writes as
        Lambda response streaming (for up to 15 minutes)."""
        super().__init__(scope, construct_id)
        # How long one request may take here (GANTRY_REQUEST_TIMEOUT_SECONDS, set by
        # ModelAccess); None: as long as the function's timeout allows.
        self.request_budget = request_budget
        unknown = set(table_access) - set(tables)
        if unknown:
            raise ValueError(f"{construct_id}: unknown tables {sorted(unknown)}")

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=FUNCTION_LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Gantry {construct_id} function",
        )
        env: dict[str, str] = {
            "GANTRY_ENV": "aws",
            "GANTRY_REGION": Aws.REGION,
            "GANTRY_KEY_PEPPER_SECRET_ARN": pepper.secret_arn,
            "POWERTOOLS_SERVICE_NAME": POWERTOOLS_SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": POWERTOOLS_METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": POWERTOOLS_LOG_LEVEL,
        }
        for name, table in tables.items():
            env[table_specs[name].env_var] = table.table_name
        if web_adapter is not None:
            env.update(WEB_ADAPTER_ENVIRONMENT)
            layers = [*layers, web_adapter]
            timeout = timeout or Duration.seconds(STREAMING_TIMEOUT_SECONDS)
        env.update(environment or {})

        self.function = lambda_.Function(
            self,
            "Function",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            code=lambda_.Code.from_asset(str(code_dir), exclude=list(ASSET_EXCLUDES)),
            handler=handler,
            description=description,
            layers=list(layers),
            memory_size=memory_size,
            timeout=timeout or Duration.seconds(BUFFERED_TIMEOUT_SECONDS),
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            role=self.role,
            environment=env,
        )

        self.log_group.grant_write(self.role)
        pepper.grant_read(self.role)
        for name, access in sorted(table_access.items()):
            self._grant_table(table_specs[name], tables[name], access)

        acknowledge(
            self.role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords do not "
            "support resource-level permissions, so CDK grants them on '*'.",
        )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "Python 3.12 is deliberate: the layers are built with pip --python-version 3.12 "
            "wheels, and the runtime is upgraded together with them.",
        )

    def _grant_table(self, spec: TableSpec, table: dynamodb.ITable, access: TableAccess) -> None:
        resources = [table.table_arn]
        resources += [f"{table.table_arn}/index/{index.name}" for index in spec.indexes]
        self.role.add_to_principal_policy(
            iam.PolicyStatement(actions=access.actions, resources=resources)
        )

    @property
    def function_name(self) -> str:
        return self.function.function_name
