"""Names, paths and defaults shared by the Gantry stacks and constructs."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aws_cdk import aws_logs as logs

REPO_ROOT: Final = Path(__file__).resolve().parent.parent

# Stacks
APP_NAME: Final = "Gantry"
DATA_STACK_NAME: Final = "GantryData"
API_STACK_NAME: Final = "GantryApi"

# Shared code and its third-party dependencies, shipped as Lambda layers
SHARED_PACKAGE: Final = "gantry"
SHARED_PACKAGE_ROOT: Final = REPO_ROOT / "layers" / "gantry"
DEPENDENCIES_DIR: Final = Path(__file__).resolve().parent / "dependencies"
REQUIREMENTS_FILE: Final = "requirements.txt"
FUNCTIONS_DIR: Final = REPO_ROOT / "functions"
# Files that never belong in an asset (they would also change its hash for no reason)
ASSET_EXCLUDES: Final = ("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".pytest_cache")

# Lambda runtime: CPython 3.12 on Graviton. The pip flags must match it.
LAMBDA_PYTHON_VERSION: Final = "3.12"
PIP_PLATFORM: Final = "manylinux2014_aarch64"
PIP_IMPLEMENTATION: Final = "cp"

# Function defaults
FUNCTION_MEMORY_MB: Final = 1024
# API Gateway's integration timeout is 29 s: a buffered function must answer before it.
BUFFERED_TIMEOUT_SECONDS: Final = 29
# Streamed generations may run long: the function and the integration allow 15 minutes.
STREAMING_TIMEOUT_SECONDS: Final = 900
# AWS Lambda Web Adapter: relays each chunk the app writes as Lambda response streaming.
# The layer is published per region and architecture; override with the context key below.
WEB_ADAPTER_LAYER_CONTEXT: Final = "gantry:webAdapterLayerArn"
WEB_ADAPTER_LAYER_ARN: Final = (
    "arn:aws:lambda:${AWS::Region}:753240598075:layer:LambdaAdapterLayerArm64:26"
)
WEB_ADAPTER_PORT: Final = "8080"
FUNCTION_LOG_RETENTION: Final = logs.RetentionDays.ONE_MONTH
POWERTOOLS_SERVICE_NAME: Final = "gantry"
POWERTOOLS_METRICS_NAMESPACE: Final = "Gantry"
POWERTOOLS_LOG_LEVEL: Final = "INFO"

# Key hashing pepper
PEPPER_LENGTH: Final = 48

# REST API
API_NAME: Final = "gantry"
API_STAGE_NAME: Final = "prod"
API_ACCESS_LOG_RETENTION: Final = logs.RetentionDays.THREE_MONTHS
# Stage-wide ceiling; per-key limits are enforced by the functions themselves.
API_THROTTLE_RATE_LIMIT: Final = 1000
API_THROTTLE_BURST_LIMIT: Final = 2000
# API Gateway compresses buffered responses of at least this many bytes (gzip, deflate) when
# the client accepts it; equal to the app's own threshold for the routes it compresses.
API_MIN_COMPRESSION_BYTES: Final = 1024

# The files bucket is named per account and region, so the API stack refers to it by name
# (and IAM statements name it) without a cross-stack reference.
FILES_BUCKET_NAME: Final = "gantry-files-${AWS::AccountId}-${AWS::Region}"
