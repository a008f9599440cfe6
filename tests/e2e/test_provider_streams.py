"""Remote providers streamed over a real socket: a stream that dies half-way ends with an
error event and bills what was generated; a client that leaves cancels the upstream call;
a provider that fails before its first token is an HTTP error or a fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from botocore.exceptions import ConnectionClosedError

from gantry.local.server import BackgroundServer
from gantry.local.upstream import Behaviour, Upstream
from gantry.runtime import Runtime
from tests.bedrock_wire import error, exception_event, stream, stream_events
from tests.e2e.test_streaming import frames, post_stream, wait_for
from tests.provider_support import BEDROCK_CHAT, REMOTE_CHAT, Remote, wire_remote
from tests.support import RecordingMeter


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


@pytest.fixture
def server(runtime: Runtime, remote: Remote) -> Iterator[BackgroundServer]:
    with BackgroundServer(runtime=runtime) as background:
        yield background


def content(lines: list[str]) -> list[str]:
    texts = []
    for line in lines:
        if line.startswith("data: {") and '"content"' in line:
            chunk = json.loads(line.removeprefix("data: "))
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                texts.append(chunk["choices"][0]["delta"]["content"])
    return texts


def test_openai_stream_end_to_end_with_exact_usage(
    server: BackgroundServer, admin_key: str, meter: RecordingMeter
) -> None:
    with post_stream(
        server, admin_key, model=REMOTE_CHAT, stream_options={"include_usage": True}
    ) as response:
        lines = list(frames(response.iter_lines()))
    assert "".join(content(lines)) == "hi there"
    assert lines[-1] == "data: [DONE]"
    usage = json.loads(lines[-2].removeprefix("data: "))["usage"]
    assert usage["completion_tokens"] == 2
    wait_for(lambda: len(meter.settled) == 1)
    assert meter.settled[0][1].completion_tokens == 2


@pytest.mark.parametrize("provider", ["openai", "bedrock"])
def test_a_stream_that_dies_half_way_ends_with_an_error_and_bills_what_was_sent(
    server: BackgroundServer, admin_key: str, meter: RecordingMeter, remote: Remote, provider: str
) -> None:
    if provider == "openai":
        model = REMOTE_CHAT
        remote.upstream.queue(Behaviour(die_after=2))
        message = "one two three four five"
    else:
        model = BEDROCK_CHAT
        chunks = stream_events(["one", " two", " three"])[:3]
        remote.wire.queue(stream(*chunks, fail=ConnectionClosedError(endpoint_url="https://b")))
        message = "hi"
    with post_stream(
        server, admin_key, model=model, messages=[{"role": "user", "content": message}]
    ) as response:
        assert response.status_code == 200
        lines = list(frames(response.iter_lines()))
    assert content(lines) == ["one", " two"]
    assert "data: [DONE]" not in lines
    failure = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert failure["code"] == "service_unavailable"
    assert failure["retryable"] is True
    assert failure["details"]["subsystem"] == "model_provider"
    wait_for(lambda: len(meter.settled) == 1)
    assert meter.settled[0][1].completion_tokens == 2  # the two tokens that reached the client
    assert meter.released == []


def test_an_exception_event_mid_stream(
    server: BackgroundServer, admin_key: str, meter: RecordingMeter, remote: Remote
) -> None:
    chunks = [*stream_events(["a", " b"])[:3], exception_event("throttlingException", "slow")]
    remote.wire.queue(stream(*chunks))
    with post_stream(server, admin_key, model=BEDROCK_CHAT) as response:
        lines = list(frames(response.iter_lines()))
    failure = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert failure["details"]["reason"] == "provider_throttled"
    wait_for(lambda: len(meter.settled) == 1)
    assert meter.settled[0][1].completion_tokens == 2


def test_a_client_that_leaves_cancels_the_upstream_call(
    server: BackgroundServer, admin_key: str, meter: RecordingMeter, remote: Remote
) -> None:
    remote.upstream.queue(Behaviour(chunk_delay=0.3))
    long = " ".join(["word"] * 50)
    with post_stream(
        server, admin_key, model=REMOTE_CHAT, messages=[{"role": "user", "content": long}]
    ) as response:
        for line in frames(response.iter_lines()):
            if '"content":"word"' in line:
                break
    wait_for(lambda: remote.upstream.disconnects == 1)
    assert remote.upstream.completed == 0
    wait_for(lambda: len(meter.settled) == 1)
    assert 1 <= meter.settled[0][1].completion_tokens < 50


def test_a_failure_before_the_first_token_is_an_http_error(
    server: BackgroundServer, admin_key: str, meter: RecordingMeter, remote: Remote
) -> None:
    remote.wire.queue(error("ValidationException", "Input is too long for requested model.", 400))
    with post_stream(server, admin_key, model=BEDROCK_CHAT) as response:
        response.read()
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert len(meter.released) == 1 and meter.settled == []


def test_a_stream_falls_back_before_its_first_token(
    server: BackgroundServer, admin_key: str, meter: RecordingMeter, remote: Remote
) -> None:
    remote.register("remote-with-fallback", "openai", fallbacks=["gantry-echo"])
    remote.upstream.default = Behaviour(status=503)
    with post_stream(server, admin_key, model="remote-with-fallback") as response:
        assert response.status_code == 200
        assert response.headers["x-gantry-fallback-model"] == "gantry-echo"
        lines = list(frames(response.iter_lines()))
    chunks = [
        json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: {")
    ]
    assert {chunk["model"] for chunk in chunks} == {"gantry-echo"}
    assert "".join(content(lines)) == "hi there"
    wait_for(lambda: len(meter.settled) == 1)
    assert meter.settled[0][1].cost_usd == 0.0


def test_the_openai_sdk_streams_through_a_remote_model(
    server: BackgroundServer, admin_key: str, meter: RecordingMeter
) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=admin_key, max_retries=0)
    pieces = client.chat.completions.create(
        model=REMOTE_CHAT,
        messages=[{"role": "user", "content": "a b c"}],
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == "a b c"
