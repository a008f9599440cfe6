"""Conversations over a real socket: concurrent posters, streamed replies, interrupted and
failed streams, and the lock a stream holds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from gantry.domain.conversation_service import ConversationService
from gantry.local.server import BackgroundServer
from gantry.runtime import Runtime
from tests.conftest import assert_error
from tests.conversation_support import (
    CONVERSATIONS,
    all_messages,
    caller,
    create,
    say,
    small_window_model,
)
from tests.e2e.test_streaming import SLOW, frames, use_slow, wait_for
from tests.integration.test_limits import Caller
from tests.support import SlowProvider


@pytest.fixture
def server(runtime: Runtime) -> Iterator[BackgroundServer]:
    with BackgroundServer(runtime=runtime) as background:
        yield background


@pytest.fixture
def http(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


@contextmanager
def stream(
    http: httpx.Client, who: Caller, cid: str, content: str, **body: Any
) -> Iterator[httpx.Response]:
    with http.stream(
        "POST",
        f"{CONVERSATIONS}/{cid}/messages",
        headers=who.headers,
        json={"content": content, "stream": True, **body},
    ) as response:
        yield response


def chunks(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: {")]


def test_two_threads_posting_fifty_messages_each_never_interleave(
    server: BackgroundServer, http: httpx.Client, runtime: Runtime
) -> None:
    # The echo model repeats the message; a small window keeps each turn's reads bounded.
    small_window_model(runtime, "conv-echo-small", base="gantry-echo", context_window=256)
    who = caller(runtime)
    cid = create(http, who, model="conv-echo-small")["id"]
    errors: list[str] = []

    def post_all(name: str) -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as own:
            for i in range(50):
                while True:
                    response = say(own, who, cid, f"{name}-{i}")
                    if response.status_code == 409:  # waited its turn too long: retry
                        time.sleep(0.05)
                        continue
                    if response.status_code != 200:
                        errors.append(response.text)
                    break

    threads = [threading.Thread(target=post_all, args=(name,)) for name in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []

    messages = all_messages(http, who, cid)
    assert len(messages) == 200
    users, replies = messages[0::2], messages[1::2]
    assert {m["role"] for m in users} == {"user"} and {m["role"] for m in replies} == {"assistant"}
    assert [m["turn"] for m in users] == [m["turn"] for m in replies] == list(range(1, 101))
    # Every reply follows its own message: no turn interleaved with another.
    assert [m["content"] for m in replies] == [m["content"] for m in users]
    for name in ("A", "B"):
        mine = [m["content"] for m in users if m["content"].startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(50)]  # each poster's order kept
    read = http.get(f"{CONVERSATIONS}/{cid}", headers=who.headers).json()
    assert (read["turn_count"], read["message_count"]) == (100, 200)
    assert read["usage"]["completion_tokens"] == sum(
        m["usage"]["completion_tokens"] for m in replies
    )


def test_a_streamed_reply_is_stored_before_done(http: httpx.Client, runtime: Runtime) -> None:
    who = caller(runtime)
    cid = create(http, who, defaults={"max_tokens": 25, "seed": 4})["id"]
    with stream(
        http, who, cid, "Tell me about cooking rice.", stream_options={"include_usage": True}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-conversation-turn"] == "1"
        lines = list(frames(response.iter_lines()))
    assert lines[-1] == "data: [DONE]"
    events = chunks(lines)
    reply_id = f"msg_{cid[5:]}_2"
    assert {e["id"] for e in events} == {reply_id}
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1]
    usage = events[-1]["usage"]

    user, reply = all_messages(http, who, cid)  # readable as soon as [DONE] arrived
    assert user["content"] == "Tell me about cooking rice."
    assert reply["id"] == reply_id and reply["content"] == text
    assert reply["status"] == "completed" and reply["finish_reason"] == finish
    assert reply["usage"]["completion_tokens"] == usage["completion_tokens"]
    assert reply["usage"]["prompt_tokens"] == usage["prompt_tokens"]

    # The same reply buffered: the streamed turn is part of the next context.
    second = say(http, who, cid, "And how long does it take?")
    assert second.status_code == 200, second.text
    assert second.json()["context"]["prompt_tokens"] > usage["prompt_tokens"] + reply["tokens"]


def test_an_interrupted_stream_stores_what_was_produced(
    http: httpx.Client, runtime: Runtime
) -> None:
    provider = SlowProvider(delay=0.05, tokens=200)
    use_slow(runtime, provider)
    who = caller(runtime)
    cid = create(http, who, model=SLOW)["id"]
    with stream(http, who, cid, "talk for a long time") as response:
        seen = 0
        for line in frames(response.iter_lines()):
            seen += '"content":" t' in line
            if seen == 3:
                break
    wait_for(lambda: provider.finished.is_set())
    wait_for(lambda: len(all_messages(http, who, cid)) == 2)
    _, reply = all_messages(http, who, cid)
    assert reply["status"] == "incomplete" and reply["finish_reason"] is None
    assert reply["content"] == "".join(f" t{i}" for i in range(provider.produced))
    assert 3 <= provider.produced < 20
    assert reply["usage"]["completion_tokens"] == provider.produced  # billed what was made

    provider.tokens, provider.produced = 2, 0  # the conversation is free again
    with stream(http, who, cid, "now briefly") as response:
        assert list(frames(response.iter_lines()))[-1] == "data: [DONE]"
    messages = all_messages(http, who, cid)
    assert [m["status"] for m in messages[1::2]] == ["incomplete", "completed"]
    assert messages[-1]["content"] == " t0 t1"


def test_a_failed_stream_stores_the_partial_reply(http: httpx.Client, runtime: Runtime) -> None:
    use_slow(runtime, SlowProvider(delay=0.01, tokens=10, fail_after=3))
    who = caller(runtime)
    cid = create(http, who, model=SLOW)["id"]
    with stream(http, who, cid, "try") as response:
        lines = list(frames(response.iter_lines()))
    assert "data: [DONE]" not in lines
    assert json.loads(lines[-1].removeprefix("data: "))["error"]["code"] == "internal_error"
    wait_for(lambda: len(all_messages(http, who, cid)) == 2)
    _, reply = all_messages(http, who, cid)
    assert (reply["status"], reply["content"]) == ("incomplete", " t0 t1 t2")


def test_a_failure_before_the_first_token_stores_nothing(
    http: httpx.Client, runtime: Runtime
) -> None:
    use_slow(runtime, SlowProvider(fail_after=0))
    who = caller(runtime)
    cid = create(http, who, model=SLOW)["id"]
    with stream(http, who, cid, "try") as response:
        response.read()
    assert response.status_code == 500
    assert all_messages(http, who, cid) == []
    read = http.get(f"{CONVERSATIONS}/{cid}", headers=who.headers).json()
    assert read["turn_count"] == 0  # and the conversation was released:
    runtime.providers["slow"] = SlowProvider(delay=0.0, tokens=2)  # type: ignore[assignment]
    with stream(http, who, cid, "again") as response:
        assert list(frames(response.iter_lines()))[-1] == "data: [DONE]"


def test_a_stream_holds_the_conversation_until_it_ends(
    http: httpx.Client, runtime: Runtime
) -> None:
    # A 2 s pause after the third token holds the stream open for as long as `say` needs.
    provider = SlowProvider(delay=0.02, tokens=30, pause_after=2, pause=2.0)
    use_slow(runtime, provider)
    service = runtime.conversations
    runtime.__dict__["conversations"] = ConversationService(
        service.store, service.inference, service.clock, busy_wait_seconds=0.05
    )
    who = caller(runtime)
    cid = create(http, who, model=SLOW)["id"]
    with stream(http, who, cid, "first") as response:
        lines = frames(response.iter_lines())
        next(lines)
        busy = say(http, who, cid, "second")
        rest = list(lines)
    assert rest[-1] == "data: [DONE]"
    assert_error(busy, 409, "conversation_busy")
    assert busy.headers["retry-after"] == "1"
    provider.tokens = 2
    with stream(http, who, cid, "second") as response:
        assert list(frames(response.iter_lines()))[-1] == "data: [DONE]"
    assert [m["content"] for m in all_messages(http, who, cid)][0::2] == ["first", "second"]
