"""Every inference route runs its provider call between admission and settlement."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.runtime import Runtime
from tests.conftest import assert_error
from tests.support import RecordingMeter


@pytest.fixture
def meter(runtime: Runtime) -> RecordingMeter:
    recording = RecordingMeter()
    runtime.__dict__["meter"] = recording
    return recording


ROUTES: list[tuple[str, dict[str, Any], str]] = [
    (
        "/v1/chat/completions",
        {
            "model": "gantry-small",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "n": 2,
        },
        "chat.completions",
    ),
    (
        "/v1/completions",
        {"model": "gantry-small", "prompt": ["a", "b"], "max_tokens": 4},
        "completions",
    ),
    ("/v1/embeddings", {"model": "gantry-embed-small", "input": ["one", "two"]}, "embeddings"),
    ("/v1/classifications", {"input": "nice", "labels": ["good", "bad"]}, "classifications"),
    ("/v1/moderations", {"input": "hello"}, "moderations"),
]


@pytest.mark.parametrize(("path", "body", "endpoint"), ROUTES)
def test_admitted_then_settled_with_real_usage(
    api: TestClient, meter: RecordingMeter, path: str, body: dict[str, Any], endpoint: str
) -> None:
    response = api.post(path, json=body)
    assert response.status_code == 200, response.text
    (admission,) = meter.admitted
    assert admission.endpoint == endpoint
    assert admission.request_id == response.headers["x-request-id"]
    ((settled, actual),) = meter.settled
    assert settled is admission
    usage = response.json()["usage"]
    assert actual.prompt_tokens == usage["prompt_tokens"]
    assert actual.completion_tokens == usage.get("completion_tokens", 0)
    assert actual.total_tokens <= admission.estimate.tokens
    assert abs(actual.cost_usd - float(response.headers["x-cost-usd"])) < 1e-9
    assert response.headers["x-ratelimit-limit-requests"] == "10"
    assert meter.released == []


def test_chat_reserves_prompt_plus_every_choices_max_tokens(
    api: TestClient, meter: RecordingMeter, runtime: Runtime
) -> None:
    body = ROUTES[0][1]
    api.post("/v1/chat/completions", json=body)
    (admission,) = meter.admitted
    prompt = meter.settled[0][1].prompt_tokens
    assert admission.estimate.tokens == prompt + 5 * 2


def test_refusal_is_429_with_retry_after(api: TestClient, meter: RecordingMeter) -> None:
    meter.refuse = True
    response = api.post("/v1/chat/completions", json=ROUTES[0][1])
    error = assert_error(response, 429, "rate_limit_exceeded", None, kind="rate_limit_error")
    assert response.headers["retry-after"] == "3"
    assert error["details"] == {"dimension": "requests_per_minute"}
    assert error["retryable"] is True


def test_provider_failure_releases_the_reservation(
    api: TestClient, meter: RecordingMeter, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = runtime.providers["local"]

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("provider exploded")

    monkeypatch.setattr(provider, "chat", broken)
    response = api.post("/v1/chat/completions", json=ROUTES[0][1])
    assert_error(response, 500, "internal_error", None, kind="server_error")
    assert len(meter.released) == 1
    assert meter.settled == []
