"""Registry fields for serving remote models: fallbacks, hedging, timeouts, provider options."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from gantry.domain.model_policy import ModelPolicy
from gantry.domain.registry import ModelSpec, Registry

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "registry.providers.example.json"


def raw(**extra: Any) -> dict[str, Any]:
    return {
        "id": "m",
        "provider": "openai",
        "version": "1",
        "context_window": 100,
        "max_output_tokens": 10,
        "capabilities": ["chat"],
        **extra,
    }


def test_defaults_keep_every_model_as_it_was() -> None:
    spec = ModelSpec.from_dict(raw())
    assert spec.policy == ModelPolicy()
    assert spec.policy.fallbacks == () and not spec.policy.hedge
    assert spec.policy.timeout_seconds is None and spec.provider_options == {}


def test_fields_are_read() -> None:
    spec = ModelSpec.from_dict(
        raw(
            fallbacks=["a", "b"],
            hedging={"enabled": True, "delay_ms": 40},
            timeout_seconds=12,
            provider_options={"base_url": "http://127.0.0.1:9/v1"},
        )
    )
    assert spec.policy == ModelPolicy(("a", "b"), True, 40.0, 12.0)
    assert spec.provider_options["base_url"] == "http://127.0.0.1:9/v1"
    assert isinstance(hash(spec), int)  # options are not part of the spec's identity


@pytest.mark.parametrize(
    "bad",
    [
        {"fallbacks": "other"},
        {"fallbacks": ["m"]},
        {"timeout_seconds": 0},
        {"provider_options": ["x"]},
    ],
)
def test_invalid_fields_are_refused_at_load(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ModelSpec.from_dict(raw(**bad))


def test_the_default_registry_is_unchanged_and_offline() -> None:
    default = json.loads(resources.files("gantry").joinpath("models.json").read_text())
    assert {m["provider"] for m in default["models"]} == {"local"}


def test_the_example_registry_loads_next_to_the_default_one() -> None:
    default = json.loads(resources.files("gantry").joinpath("models.json").read_text())
    example = json.loads(EXAMPLE.read_text())
    registry = Registry.from_dict({"models": default["models"] + example["models"]})
    providers = {spec.provider for spec in registry.all()}
    assert {"bedrock", "openai", "gguf", "minilm"} <= providers
    for spec in registry.all():
        for fallback in spec.policy.fallbacks:
            target = registry.get(fallback)  # every fallback exists...
            assert (
                spec.capabilities & {"chat", "embeddings"} <= target.capabilities
            )  # ...and can serve
