"""Provider faults as a client sees them: every failure of either provider maps to the
documented status, code, retryable flag and Retry-After, and usage is settled correctly
(released when nothing billable was produced). The breaker opens and recovers; fallbacks
serve and are reported; hedging answers with the faster of two calls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError
from fastapi.testclient import TestClient

from gantry.local.upstream import Behaviour, Upstream
from gantry.runtime import Runtime
from tests.bedrock_wire import Reply, converse_body, error, ok
from tests.conftest import FakeClock, assert_error
from tests.provider_support import BEDROCK_CHAT, REMOTE_CHAT, REMOTE_EMBED, Remote, wire_remote
from tests.support import RecordingMeter

CHAT = {"messages": [{"role": "user", "content": "tell me about the sea"}], "max_tokens": 20}
TOO_LONG = (
    b'{"error": {"message": "This model\'s maximum context length is 8192 tokens", '
    b'"code": "context_length_exceeded"}}'
)
POLICY = (
    b'{"error": {"message": "rejected by our safety system", "code": "content_policy_violation"}}'
)


@pytest.fixture
def meter(runtime: Runtime) -> RecordingMeter:
    recording = RecordingMeter()
    runtime.__dict__["meter"] = recording
    return recording


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture
def remote(runtime: Runtime, upstream: Upstream) -> Remote:
    return wire_remote(runtime, upstream)


def chat(api: TestClient, model: str, **extra: Any) -> Any:
    return api.post("/v1/chat/completions", json={"model": model, **CHAT, **extra})


def assert_released(meter: RecordingMeter) -> None:
    assert len(meter.admitted) == 1
    assert len(meter.released) == 1 and meter.settled == []


# --- OpenAI-compatible -----------------------------------------------------------------------

OPENAI_FAULTS = [
    # behaviour, status, code, retryable, retry-after, details (subset), attempts
    (
        Behaviour(status=429, headers={"retry-after": "3"}),
        503,
        "service_unavailable",
        True,
        "3",
        {"subsystem": "model_provider", "reason": "provider_throttled"},
        3,
    ),
    (Behaviour(status=500), 503, "service_unavailable", True, "1", {"reason": "provider_error"}, 3),
    (
        Behaviour(reset=True),
        503,
        "service_unavailable",
        True,
        "1",
        {"reason": "connection_reset"},
        3,
    ),
    (
        Behaviour(body=b"<html>bad gateway"),
        502,
        "model_output_invalid",
        True,
        None,
        {"subsystem": "model_provider"},
        1,
    ),
    (
        Behaviour(status=400, body=TOO_LONG),
        400,
        "context_length_exceeded",
        False,
        None,
        {"context_window": 8192},
        1,
    ),
    (Behaviour(status=400, body=POLICY), 400, "content_policy_violation", False, None, None, 1),
    (
        Behaviour(status=401),
        503,
        "service_unavailable",
        False,
        None,
        {"reason": "provider_configuration"},
        1,
    ),
]


@pytest.mark.parametrize(
    ("behaviour", "status", "code", "retryable", "retry_after", "details", "attempts"),
    OPENAI_FAULTS,
    ids=["throttled", "500", "reset", "malformed", "too-long", "policy", "credentials"],
)
def test_openai_faults(
    api: TestClient,
    meter: RecordingMeter,
    remote: Remote,
    upstream: Upstream,
    behaviour: Behaviour,
    status: int,
    code: str,
    retryable: bool,
    retry_after: str | None,
    details: dict[str, Any] | None,
    attempts: int,
) -> None:
    upstream.default = behaviour
    response = chat(api, REMOTE_CHAT)
    param = "messages" if code == "context_length_exceeded" else None
    body = assert_error(response, status, code, param)
    assert body["retryable"] is retryable
    assert response.headers.get("retry-after") == retry_after
    if details is None:
        assert body["details"] is None
    else:
        assert details.items() <= body["details"].items()  # type: ignore[union-attr]
    assert len(upstream.requests) == attempts  # transient failures only are retried
    assert_released(meter)


def test_openai_timeout_is_504_with_advice(
    api: TestClient, meter: RecordingMeter, remote: Remote, upstream: Upstream
) -> None:
    remote.register("remote-slow", "openai", timeout_seconds=0.2)
    upstream.default = Behaviour(delay=3.0)
    started = time.monotonic()
    response = chat(api, "remote-slow")
    assert time.monotonic() - started < 2.5  # three 0.2 s attempts, not the server's 3 s
    body = assert_error(response, 504, "model_timeout", None, kind="server_error")
    assert body["retryable"] is True
    assert body["details"]["suggestions"] == ["lower max_tokens", "stream: true"]  # type: ignore[index]
    assert body["details"]["timeout_seconds"] == 0.2  # type: ignore[index]
    assert_released(meter)


def test_a_transient_failure_then_success_is_one_billed_request(
    api: TestClient, meter: RecordingMeter, remote: Remote, upstream: Upstream
) -> None:
    upstream.queue(Behaviour(status=503), Behaviour(reset=True))
    response = chat(api, REMOTE_CHAT)
    assert response.status_code == 200, response.text
    assert len(upstream.requests) == 3 and len(remote.sleeps) == 2
    ((_, actual),) = meter.settled
    assert actual.prompt_tokens == response.json()["usage"]["prompt_tokens"] == 5
    assert actual.completion_tokens == 5
    assert meter.released == []


# --- Bedrock -----------------------------------------------------------------------------------

BLOCKED_TRACE = {
    "guardrail": {
        "inputAssessment": {
            "gr": {
                "contentPolicy": {
                    "filters": [{"type": "HATE", "confidence": "HIGH", "action": "BLOCKED"}]
                }
            }
        }
    }
}
BEDROCK_FAULTS = [
    (
        [error("ThrottlingException", "Too many requests", 429)] * 3,
        503,
        "service_unavailable",
        True,
        "1",
        {"reason": "provider_throttled"},
    ),
    (
        [error("ModelTimeoutException", "timed out", 408)] * 3,
        504,
        "model_timeout",
        True,
        None,
        {"subsystem": "model_provider"},
    ),
    (
        [error("InternalServerException", "boom", 500)] * 3,
        503,
        "service_unavailable",
        True,
        "1",
        {"reason": "provider_error"},
    ),
    (
        [Reply(raise_=ConnectionClosedError(endpoint_url="https://bedrock"))] * 3,
        503,
        "service_unavailable",
        True,
        "1",
        {"reason": "connection_reset"},
    ),
    (
        [
            ok(
                {
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
                    "metrics": {"latencyMs": 1},
                }
            )
        ],
        502,
        "model_output_invalid",
        True,
        None,
        {"subsystem": "model_provider"},
    ),
    (
        [error("ValidationException", "Input is too long for requested model.", 400)],
        400,
        "context_length_exceeded",
        False,
        None,
        {"context_window": 8192},
    ),
    (
        [ok(converse_body("Sorry.", "guardrail_intervened", 9, 0, BLOCKED_TRACE))],
        400,
        "content_policy_violation",
        False,
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("replies", "status", "code", "retryable", "retry_after", "details"),
    BEDROCK_FAULTS,
    ids=["throttled", "model-timeout", "500", "reset", "malformed", "too-long", "guardrail"],
)
def test_bedrock_faults(
    api: TestClient,
    meter: RecordingMeter,
    remote: Remote,
    replies: list[Reply],
    status: int,
    code: str,
    retryable: bool,
    retry_after: str | None,
    details: dict[str, Any] | None,
) -> None:
    remote.wire.queue(*replies)
    response = chat(api, BEDROCK_CHAT)
    param = "messages" if code == "context_length_exceeded" else None
    body = assert_error(response, status, code, param)
    assert body["retryable"] is retryable
    assert response.headers.get("retry-after") == retry_after
    if details is None:
        assert body["details"] is None
    else:
        assert details.items() <= body["details"].items()  # type: ignore[union-attr]
    assert len(remote.wire.requests) == len(replies)
    assert_released(meter)


def test_bedrock_answer_is_billed_from_its_own_counts(
    api: TestClient, meter: RecordingMeter, remote: Remote
) -> None:
    remote.wire.queue(ok(converse_body("The sea is wide.", "max_tokens", 13, 20)))
    response = chat(api, BEDROCK_CHAT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "The sea is wide."
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 13, "completion_tokens": 20, "total_tokens": 33}
    ((_, actual),) = meter.settled
    assert (actual.prompt_tokens, actual.completion_tokens) == (13, 20)
    assert actual.cost_usd == pytest.approx((13 * 1.0 + 20 * 2.0) / 1e6)


# --- breaker, fallbacks, hedging ------------------------------------------------------------


def test_the_breaker_opens_after_repeated_failures_and_recovers(
    api: TestClient, meter: RecordingMeter, runtime: Runtime, upstream: Upstream, clock: FakeClock
) -> None:
    wire_remote(runtime, upstream, attempts=1, failures=3, open_seconds=30)
    upstream.default = Behaviour(status=500)
    for _ in range(3):
        assert_error(chat(api, REMOTE_CHAT), 503, "service_unavailable")
    assert len(upstream.requests) == 3
    response = chat(api, REMOTE_CHAT)
    body = assert_error(response, 503, "service_unavailable")
    assert body["details"]["circuit_open"] is True  # type: ignore[index]
    assert body["retryable"] is True
    assert body["details"]["subsystem"] == "model_provider"  # type: ignore[index]
    assert response.headers["retry-after"] == "30"
    assert len(upstream.requests) == 3  # failed fast: the provider was not called
    clock.advance(30)
    upstream.default = Behaviour()
    assert chat(api, REMOTE_CHAT).status_code == 200  # the half-open probe succeeds
    assert chat(api, REMOTE_CHAT).status_code == 200
    assert len(upstream.requests) == 5


def test_a_fallback_serves_and_is_reported(
    api: TestClient, meter: RecordingMeter, remote: Remote, upstream: Upstream
) -> None:
    remote.register("remote-with-fallback", "openai", fallbacks=["gantry-echo"])
    upstream.default = Behaviour(status=503)
    response = chat(api, "remote-with-fallback")
    assert response.status_code == 200, response.text
    assert response.headers["x-gantry-fallback-model"] == "gantry-echo"
    assert response.headers["x-gantry-requested-model"] == "remote-with-fallback"
    body = response.json()
    assert body["model"] == "gantry-echo"
    assert body["choices"][0]["message"]["content"] == "tell me about the sea"
    ((_, actual),) = meter.settled
    assert actual.prompt_tokens == body["usage"]["prompt_tokens"]
    assert actual.cost_usd == 0.0  # priced as the model that served


def test_no_fallback_header_when_the_model_served(
    api: TestClient, meter: RecordingMeter, remote: Remote, upstream: Upstream
) -> None:
    response = chat(api, REMOTE_CHAT)
    assert response.status_code == 200
    assert "x-gantry-fallback-model" not in response.headers
    assert response.json()["model"] == REMOTE_CHAT


def test_hedged_embeddings_answer_with_the_faster_call_and_cancel_the_slower(
    api: TestClient, meter: RecordingMeter, remote: Remote, upstream: Upstream
) -> None:
    upstream.queue(Behaviour(delay=3.0))  # the first call hangs; the hedge answers at once
    started = time.monotonic()
    response = api.post(
        "/v1/embeddings",
        json={"model": REMOTE_EMBED, "input": ["a b c"]},
        headers={"Cache-Control": "no-cache, no-store"},  # the provider must be called
    )
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 2.0
    assert len(response.json()["data"]) == 1
    assert len(upstream.requests) == 2
    deadline = time.monotonic() + 5
    while upstream.disconnects < 1:
        assert time.monotonic() < deadline, "the slower call was not cancelled"
        time.sleep(0.01)
    assert (remote.resilience.hedging.hedges, remote.resilience.hedging.hedge_wins) == (1, 1)
    assert len(meter.settled) == 1  # billed once


def test_moderation_through_a_remote_model(
    api: TestClient, meter: RecordingMeter, remote: Remote
) -> None:
    response = api.post("/v1/moderations", json={"model": REMOTE_EMBED, "input": "attack now"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["flagged"] is True
