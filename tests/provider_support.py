"""Remote models wired into a test runtime: an OpenAI-compatible upstream on loopback, a fake
Bedrock endpoint, and resilience rules whose backoff sleeps are recorded, not slept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gantry.adapters.bedrock import BedrockProvider
from gantry.domain.circuit_breaker import BreakerPolicy
from gantry.domain.model_router import ModelRouter
from gantry.domain.registry import ModelSpec
from gantry.domain.resilience import Resilience, ResilienceSettings
from gantry.domain.retry import RetryPolicy
from gantry.local.upstream import Upstream
from gantry.runtime import Runtime
from tests.bedrock_wire import BedrockWire

REMOTE_CHAT = "remote-chat"
REMOTE_EMBED = "remote-embed"
BEDROCK_CHAT = "bedrock-chat"


@dataclass
class Remote:
    runtime: Runtime
    upstream: Upstream
    wire: BedrockWire
    resilience: Resilience
    sleeps: list[float] = field(default_factory=list)

    def register(self, model_id: str, provider: str, **extra: Any) -> ModelSpec:
        options = {"base_url": self.upstream.base_url} if provider == "openai" else {}
        raw = {
            "id": model_id,
            "provider": provider,
            "provider_model_id": f"upstream/{model_id}",
            "version": "2025-01-01",
            "context_window": 8192,
            "max_output_tokens": 512,
            "pricing": {"input_per_million": 1.0, "output_per_million": 2.0},
            "capabilities": ["chat", "completions", "embeddings", "moderations"],
            "tokenizer": "llama3",
            "provider_options": options,
            **extra,
        }
        if "provider_options" in extra:
            raw["provider_options"] = {**options, **extra["provider_options"]}
        spec = ModelSpec.from_dict(raw)
        self.runtime.registry.register(spec)
        return spec


def wire_remote(
    runtime: Runtime,
    upstream: Upstream,
    *,
    attempts: int = 3,
    failures: int = 5,
    open_seconds: float = 30.0,
) -> Remote:
    """Register the remote test models and replace the runtime's router (before the
    inference service is first built)."""
    wire = BedrockWire()
    runtime.providers["bedrock"] = BedrockProvider(lambda: wire.client)
    sleeps: list[float] = []
    settings = ResilienceSettings(
        request_timeout=20.0,
        attempt_timeout=10.0,
        retry=RetryPolicy(max_attempts=attempts),
        breaker=BreakerPolicy(failure_threshold=failures, open_seconds=open_seconds),
    )
    resilience = Resilience(settings, clock=runtime.clock.monotonic, sleep=sleeps.append)
    runtime.__dict__.pop("inference", None)
    runtime.__dict__["router"] = ModelRouter(runtime.registry, runtime.providers, resilience)
    remote = Remote(runtime, upstream, wire, resilience, sleeps)
    remote.register(REMOTE_CHAT, "openai")
    remote.register(REMOTE_EMBED, "openai", hedging={"enabled": True, "delay_ms": 300})
    remote.register(BEDROCK_CHAT, "bedrock")
    return remote
