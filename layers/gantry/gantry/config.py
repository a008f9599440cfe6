"""Settings, read from the environment on first use (never at import time)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

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
    worker_threads: int = 256


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
