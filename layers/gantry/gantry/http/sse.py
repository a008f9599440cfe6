"""Server-sent events: frames, and a response that streams them without buffering."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

PING = b": ping\n\n"
DONE = b"data: [DONE]\n\n"

SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "connection": "keep-alive",
}


def data_frame(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class EventStreamResponse(Response):
    """Sends each frame the moment it is produced (one ASGI message per frame, never
    compressed), stops producing when the client disconnects, and always closes the frame
    iterator so its cleanup (settling usage, stopping the provider) runs exactly once."""

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        headers: Mapping[str, str],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(status_code=200)
        self.frames = frames
        self.on_close = on_close
        self.stream_headers = {"content-type": "text/event-stream; charset=utf-8", **SSE_HEADERS}
        self.stream_headers.update(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def stream() -> None:
                try:
                    await self._stream(send)
                finally:
                    group.cancel_scope.cancel()

            async def watch() -> None:
                while True:
                    message: Message = await receive()
                    if message["type"] == "http.disconnect":
                        group.cancel_scope.cancel()
                        return

            group.start_soon(stream)
            group.start_soon(watch)

    async def _stream(self, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in self.stream_headers.items()],
                }
            )
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            aclose = getattr(self.frames, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
            if self.on_close is not None:
                self.on_close()
