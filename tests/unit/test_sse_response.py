"""The SSE response always runs its close callback, even for a stream that never started."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.types import Message

from gantry.http.sse import EventStreamResponse


def test_close_runs_when_the_client_is_gone_before_the_first_frame() -> None:
    started: list[bool] = []
    closed: list[bool] = []

    async def frames() -> AsyncIterator[bytes]:
        started.append(True)
        yield b"data: never\n\n"

    async def receive() -> Message:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise OSError("client went away")

    response = EventStreamResponse(frames(), {}, on_close=lambda: closed.append(True))
    asyncio.run(response({"type": "http"}, receive, send))
    assert started == []
    assert closed == [True]


def test_frames_are_sent_one_message_each_and_close_runs_once() -> None:
    sent: list[Message] = []
    closed: list[bool] = []

    async def frames() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    async def receive() -> Message:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    response = EventStreamResponse(frames(), {"x-a": "b"}, on_close=lambda: closed.append(True))
    asyncio.run(response({"type": "http"}, receive, send))
    assert sent[0]["type"] == "http.response.start"
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n", b"data: 2\n\n", b""]
    assert closed == [True]
