"""The remote model providers and the resilience settings of a process, from its settings.

Building them costs nothing: clients, connection pools, tokenizers and model weights are
made on first use, so a function whose models are all local never touches them.
"""

from __future__ import annotations

from functools import partial

from gantry.adapters.aws import read_secret
from gantry.adapters.bedrock import BedrockProvider, bedrock_runtime_client
from gantry.adapters.local_weights import GGUFProvider, MiniLMProvider
from gantry.adapters.openai_compatible import OpenAICompatibleProvider
from gantry.config import Settings
from gantry.domain.circuit_breaker import BreakerPolicy
from gantry.domain.resilience import ResilienceSettings
from gantry.domain.retry import RetryPolicy
from gantry.ports import ModelProvider


def openai_api_key(settings: Settings) -> str | None:
    if settings.openai_api_key:
        return settings.openai_api_key
    if settings.openai_api_key_secret_arn:
        return read_secret(settings.openai_api_key_secret_arn, settings)
    return None


def remote_providers(settings: Settings) -> dict[str, ModelProvider]:
    """Keyed by the registry's `provider`."""
    return {
        "bedrock": BedrockProvider(partial(bedrock_runtime_client, settings)),
        "openai": OpenAICompatibleProvider(
            settings.openai_base_url,
            partial(openai_api_key, settings),
            max_connections=settings.openai_max_connections,
            idle_timeout=settings.provider_timeout_seconds,
        ),
        "gguf": GGUFProvider(),
        "minilm": MiniLMProvider(),
    }


def resilience_settings(settings: Settings) -> ResilienceSettings:
    return ResilienceSettings(
        request_timeout=settings.request_timeout_seconds,
        attempt_timeout=min(settings.provider_timeout_seconds, settings.request_timeout_seconds),
        retry=RetryPolicy(max_attempts=settings.provider_max_attempts),
        breaker=BreakerPolicy(
            failure_threshold=settings.breaker_failures,
            open_seconds=settings.breaker_open_seconds,
        ),
    )
