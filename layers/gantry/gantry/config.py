"""Settings, read from the environment on first use (never at import time)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TableNames(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANTRY_", extra="ignore")

    keys_table: str = "gantry-keys"
    quotas_table: str = "gantry-quotas"
    usage_table: str = "gantry-usage"
    conversations_table: str = "gantry-conversations"
    jobs_table: str = "gantry-jobs"
    cache_table: str = "gantry-cache"
    idempotency_table: str = "gantry-idempotency"


class Settings(TableNames):
    """Everything a process needs to know about where it runs.

    In AWS the stack sets these as function environment variables; locally the dev server
    and the tests set them before the first request.
    """

    model_config = SettingsConfigDict(env_prefix="GANTRY_", extra="ignore")

    env: Literal["local", "aws"] = "local"
    region: str = "us-east-1"
    aws_endpoint_url: str | None = None

    key_pepper: str | None = None
    key_pepper_secret_arn: str | None = None
    key_cache_ttl_seconds: float = 60.0

    max_body_bytes: int = 5 * 1024 * 1024
    registry_path: str | None = None
    default_moderation_model: str = "gantry-moderation"
    heartbeat_seconds: float = 15.0
    # "on": limits enforced and usage recorded in DynamoDB; "off": everything admitted.
    metering: Literal["on", "off"] = "on"
    # Settlements that cannot be written after their retries wait here to be replayed.
    settlement_queue_url: str | None = None
    # Response cache: how long answers live, and the model that embeds semantic prompts.
    cache_ttl_seconds: int = 86_400
    semantic_cache_model: str = "gantry-embed-small"
    # Deprecated and retired routes (the packaged routes.json unless set).
    route_table_path: str | None = None
    worker_threads: int = 256
    # Files, fine-tuning jobs and webhooks (docs/architecture.md, "Jobs and webhooks").
    files_bucket: str = "gantry-files"
    max_file_bytes: int = 4 * 1024 * 1024
    # Larger downloads redirect to a short-lived S3 URL: Lambda streams at most 200 MB.
    max_streamed_download_bytes: int = 150 * 1024 * 1024
    fine_tuning_state_machine_arn: str | None = None
    training_queue_url: str | None = None
    webhook_queue_url: str | None = None
    # Batches: their state machine and queue, lines per Map item, Map items run at once.
    batch_state_machine_arn: str | None = None
    batch_queue_url: str | None = None
    # At least 25 lines a chunk keeps a 50,000-line batch's Map within Step Functions'
    # history and payload limits; a Map concurrency of 0 would mean unlimited.
    batch_chunk_size: int = Field(default=50, ge=25, le=1000)
    batch_max_concurrency: int = Field(default=4, ge=1, le=40)
    job_retention_days: float = 30.0
    job_heartbeat_seconds: int = 120
    job_step_timeout_seconds: int = 900
    job_train_timeout_seconds: int = 21_600
    bedrock_poll_seconds: int = 60
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_timeout_seconds: float = 10.0
    # Model providers (docs/providers.md). Timeouts nest: one provider attempt <= the
    # request's budget < the function's timeout < the client-facing timeout.
    request_timeout_seconds: float = 60.0
    provider_timeout_seconds: float = 30.0
    provider_max_attempts: int = 3
    breaker_failures: int = 5
    breaker_open_seconds: float = 30.0
    bedrock_region: str | None = None
    bedrock_endpoint_url: str | None = None
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_api_key_secret_arn: str | None = None
    openai_max_connections: int = 100


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
