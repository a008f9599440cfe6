"""Per-model serving policy from the registry: fallbacks, hedging, timeouts, provider options.

Registry keys (all optional):

    "fallbacks": ["other-model", ...]       tried in order when this model's provider fails
    "hedging": {"enabled": true,            a second request when the first is slow
                "delay_ms": 100}            (delay used until the recent p95 is known)
    "timeout_seconds": 20                   one provider attempt (default: the deployment's)
    "provider_options": {...}               adapter settings (guardrail, base_url, ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_HEDGE_DELAY_MS = 100.0


@dataclass(frozen=True)
class ModelPolicy:
    fallbacks: tuple[str, ...] = ()
    hedge: bool = False
    hedge_delay_ms: float = DEFAULT_HEDGE_DELAY_MS
    timeout_seconds: float | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelPolicy:
        fallbacks = raw.get("fallbacks") or ()
        if isinstance(fallbacks, str) or not all(isinstance(f, str) for f in fallbacks):
            raise ValueError(f"model {raw.get('id')}: 'fallbacks' must be a list of model ids")
        if raw.get("id") in fallbacks:
            raise ValueError(f"model {raw.get('id')}: a model cannot fall back to itself")
        hedging = raw.get("hedging") or {}
        timeout = raw.get("timeout_seconds")
        if timeout is not None and float(timeout) <= 0:
            raise ValueError(f"model {raw.get('id')}: 'timeout_seconds' must be positive")
        return cls(
            fallbacks=tuple(fallbacks),
            hedge=bool(hedging.get("enabled", False)),
            hedge_delay_ms=float(hedging.get("delay_ms", DEFAULT_HEDGE_DELAY_MS)),
            timeout_seconds=float(timeout) if timeout is not None else None,
        )


def provider_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    options = raw.get("provider_options") or {}
    if not isinstance(options, Mapping):
        raise ValueError(f"model {raw.get('id')}: 'provider_options' must be an object")
    return dict(options)
