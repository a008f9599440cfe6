"""Streaming over a real socket: incremental delivery, heartbeats, disconnects, failures."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import httpx
import openai
import pytest

from gantry.local.server import BackgroundServer
from gantry.runtime import Runtime
from tests.support import RecordingMeter, SlowProvider, wait_until

SLOW = "test-slow"


@pytest.fixture
def server(runtime: Runtime) -> Iterator[BackgroundServer]:
    with BackgroundServer(runtime=runtime) as background:
        yield background


@pytest.fixture
def meter(runtime: Runtime) -> RecordingMeter:
    recording = RecordingMeter()
    runtime.__dict__["meter"] = recording
    return recording


def use_slow(runtime: Runtime, provider: SlowProvider) -> None:
    base = runtime.registry.get("gantry-small")
    runtime.registry.register(replace(base, id=SLOW, provider="slow", provider_model_id=SLOW))
    runtime.providers["slow"] = provider  # type: ignore[assignment]


@contextmanager
def post_stream(server: BackgroundServer, key: str, **body: object) -> Iterator[httpx.Response]:
    with (
        httpx.Client(base_url=server.base_url, timeout=30) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"messages": [{"role": "user", "content": "hi there"}], "stream": True, **body},
        ) as response,
    ):
        yield response


def frames(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line:
            yield line


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    wait_until(condition, timeout, interval=0.02)


def test_openai_sdk_streams_chunks_and_usage(server: BackgroundServer, admin_key: str) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=admin_key, max_retries=0)
    request = {
        "model": "gantry-small",
        "messages": [{"role": "user", "content": "Tell me about cooking rice."}],
        "max_tokens": 30,
        "seed": 3,
    }
    chunks = list(
        client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
    )
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 3
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    buffered = client.chat.completions.create(**request)
    assert text == buffered.choices[0].message.content
    assert usage_chunk.usage.completion_tokens == buffered.usage.completion_tokens  # type: ignore[union-attr]
    assert usage_chunk.usage.prompt_tokens == buffered.usage.prompt_tokens  # type: ignore[union-attr]
    assert finals[0].choices[0].finish_reason == buffered.choices[0].finish_reason


def test_legacy_completions_stream(server: BackgroundServer, admin_key: str) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=admin_key, max_retries=0)
    chunks = list(
        client.completions.create(
            model="gantry-small", prompt="The cloud", max_tokens=10, stream=True, seed=1
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_first_chunk_arrives_before_generation_ends(
    server: BackgroundServer, admin_key: str, runtime: Runtime, meter: RecordingMeter
) -> None:
    provider = SlowProvider(delay=0.1, tokens=10)
    use_slow(runtime, provider)
    started = time.monotonic()
    with post_stream(server, admin_key, model=SLOW) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        arrivals = []
        produced_at_first: int | None = None
        for line in frames(response.iter_lines()):
            if '"content":" t' in line:
                arrivals.append(time.monotonic() - started)
                if produced_at_first is None:
                    produced_at_first = provider.produced
    assert len(arrivals) == 10
    # The first token reached the client while the provider was still generating.
    assert produced_at_first is not None and produced_at_first < provider.tokens
    assert arrivals[-1] - arrivals[0] > 0.5  # chunks were not coalesced at the end


def test_heartbeat_during_a_long_pause(
    server: BackgroundServer, admin_key: str, runtime: Runtime, meter: RecordingMeter
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"heartbeat_seconds": 0.05})
    use_slow(runtime, SlowProvider(delay=0.01, tokens=4, pause_after=2, pause=0.5))
    with post_stream(server, admin_key, model=SLOW) as response:
        lines = list(frames(response.iter_lines()))
    pings = [line for line in lines if line == ": ping"]
    assert len(pings) >= 3
    assert lines[-1] == "data: [DONE]"


def test_disconnect_stops_the_provider_and_bills_once(
    server: BackgroundServer, admin_key: str, runtime: Runtime, meter: RecordingMeter
) -> None:
    provider = SlowProvider(delay=0.05, tokens=200)
    use_slow(runtime, provider)
    with post_stream(server, admin_key, model=SLOW) as response:
        seen = 0
        for line in frames(response.iter_lines()):
            if '"content":" t' in line:
                seen += 1
            if seen == 3:
                break
    wait_for(lambda: provider.finished.is_set())
    assert provider.closed
    assert provider.produced < 20
    wait_for(lambda: len(meter.settled) == 1)
    time.sleep(0.2)
    assert len(meter.settled) == 1
    _, actual = meter.settled[0]
    assert actual.completion_tokens == provider.produced
    assert meter.released == []


def test_failure_mid_stream_sends_an_error_event(
    server: BackgroundServer, admin_key: str, runtime: Runtime, meter: RecordingMeter
) -> None:
    use_slow(runtime, SlowProvider(delay=0.01, tokens=10, fail_after=3))
    with post_stream(server, admin_key, model=SLOW) as response:
        assert response.status_code == 200
        lines = list(frames(response.iter_lines()))
    assert "data: [DONE]" not in lines
    error = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert error["code"] == "internal_error"
    assert error["request_id"] == response.headers["x-request-id"]
    wait_for(lambda: len(meter.settled) == 1)
    assert meter.settled[0][1].completion_tokens == 3


def test_failure_before_the_first_byte_is_an_http_error(
    server: BackgroundServer, admin_key: str, runtime: Runtime, meter: RecordingMeter
) -> None:
    use_slow(runtime, SlowProvider(fail_after=0))
    with post_stream(server, admin_key, model=SLOW) as response:
        response.read()
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert len(meter.released) == 1 and meter.settled == []


def test_running_usage_chunks(
    server: BackgroundServer, admin_key: str, runtime: Runtime, meter: RecordingMeter
) -> None:
    use_slow(runtime, SlowProvider(delay=0.0, tokens=10))
    with post_stream(
        server,
        admin_key,
        model=SLOW,
        stream_options={"include_usage": True, "usage_interval_tokens": 4},
    ) as response:
        chunks = [
            json.loads(line.removeprefix("data: "))
            for line in frames(response.iter_lines())
            if line.startswith("data: {")
        ]
    running = [c["usage"]["completion_tokens"] for c in chunks if c["choices"] == [] and c["usage"]]
    assert running[:-1] == [4, 8]
    assert running[-1] == 10
    assert all("usage" in c for c in chunks)


def test_disconnect_with_the_real_meter_writes_one_ledger_item(
    server: BackgroundServer, admin_key: str, runtime: Runtime
) -> None:
    from gantry.adapters.aws import client

    provider = SlowProvider(delay=0.05, tokens=200)
    use_slow(runtime, provider)
    with post_stream(server, admin_key, model=SLOW) as response:
        request_id = response.headers["x-request-id"]
        for line in frames(response.iter_lines()):
            if '"content":" t2"' in line:
                break
    wait_for(lambda: provider.finished.is_set())
    dynamodb = client("dynamodb", runtime.settings)
    key = {"pk": {"S": f"REQ#{request_id}"}, "sk": {"S": "LEDGER"}}

    def ledger() -> dict[str, object] | None:
        item = dynamodb.get_item(TableName=runtime.settings.usage_table, Key=key).get("Item")
        return item  # type: ignore[no-any-return]

    wait_for(lambda: ledger() is not None)
    item = ledger()
    assert item is not None
    assert int(item["completion_tokens"]["N"]) == provider.produced  # type: ignore[index]
    query = dynamodb.query(
        TableName=runtime.settings.usage_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"REQ#{request_id}"}},
    )
    assert query["Count"] == 1
