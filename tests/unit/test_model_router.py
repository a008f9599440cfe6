"""Fallbacks: which model serves a call when the one asked for fails."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from gantry.domain.errors import ContextLengthExceeded, InvalidRequest
from gantry.domain.model_router import ModelRouter, Prepared, Served
from gantry.domain.provider_errors import CircuitOpen, ProviderTimeout, ProviderUnavailable
from gantry.domain.registry import ModelSpec, Registry
from gantry.domain.resilience import Resilience, ResilienceSettings
from gantry.domain.retry import RetryPolicy
from gantry.ports import ModelProvider


def model(model_id: str, provider: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "provider": provider,
        "version": "1",
        "context_window": 100,
        "max_output_tokens": 10,
        "capabilities": ["chat", "embeddings"],
        **extra,
    }


REGISTRY = Registry.from_dict(
    {
        "models": [
            model("primary", "a", fallbacks=["missing", "embed-only", "small", "backup"]),
            model("embed-only", "b", capabilities=["embeddings"]),
            model("small", "b", context_window=5),
            model("backup", "b"),
        ]
    }
)
PROVIDERS: dict[str, Any] = {"a": object(), "b": object()}


def router(attempts: int = 1) -> ModelRouter:
    settings = ResilienceSettings(retry=RetryPolicy(max_attempts=attempts))
    resilience = Resilience(settings, sleep=lambda _: None, rng=random.Random(1))
    return ModelRouter(REGISTRY, PROVIDERS, resilience)


def prepare(failures: dict[str, Exception]) -> Any:
    def plan(spec: ModelSpec, provider: ModelProvider) -> Prepared[str]:
        if spec.context_window < 10:
            raise ContextLengthExceeded("does not fit")

        def run() -> str:
            if spec.id in failures:
                raise failures[spec.id]
            return f"answer from {spec.id}"

        return Prepared(run, prompt_tokens=len(spec.id))

    return plan


def test_the_model_itself_serves_when_healthy() -> None:
    served, answer = router().call(REGISTRY.get("primary"), "chat", prepare({}))
    assert (served.id, answer) == ("primary", "answer from primary")


@pytest.mark.parametrize(
    "failure",
    [ProviderUnavailable("down"), ProviderTimeout("primary", 5.0), CircuitOpen("primary", 9.0)],
)
def test_provider_failures_go_to_the_first_fallback_that_can_serve(failure: Exception) -> None:
    served, answer = router().call(REGISTRY.get("primary"), "chat", prepare({"primary": failure}))
    # missing: not in the registry; embed-only: no chat; small: the request does not fit
    assert (served.id, answer) == ("backup", "answer from backup")


def test_refusals_of_the_request_do_not_fall_back() -> None:
    refused = InvalidRequest("bad parameter")
    with pytest.raises(InvalidRequest):
        router().call(REGISTRY.get("primary"), "chat", prepare({"primary": refused}))


def test_when_every_candidate_fails_the_models_own_error_is_raised() -> None:
    first = ProviderUnavailable("primary down")
    failures = {"primary": first, "backup": ProviderUnavailable("backup down")}
    with pytest.raises(ProviderUnavailable) as raised:
        router().call(REGISTRY.get("primary"), "chat", prepare(failures))
    assert raised.value is first


def test_a_stream_falls_back_before_its_first_event_and_records_who_served() -> None:
    def plan(spec: ModelSpec, provider: ModelProvider) -> Prepared[Iterator[str]]:
        if spec.context_window < 10:
            raise ContextLengthExceeded("does not fit")

        def events() -> Iterator[str]:
            if spec.id == "primary":
                raise ProviderUnavailable("down")
            yield from ("a", "b")

        return Prepared(events, prompt_tokens=42)

    served = Served()
    assert list(router().stream(REGISTRY.get("primary"), "chat", plan, served)) == ["a", "b"]
    assert served.spec is not None and served.spec.id == "backup"
    assert served.prompt_tokens == 42
