"""Buffered work that stops when its client goes away.

A handler that waits on a provider has read its whole body, so the next ASGI message it can
receive is `http.disconnect`: uvicorn sends it as soon as the client closes the connection.
Under Mangum (buffered Lambda functions) that message only comes after the response has
been sent, so there the work always finishes first and nothing changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import anyio
from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed its connection before its answer was ready."""


async def run_unless_disconnected(
    request: Request, fn: Callable[[], T], on_disconnect: Callable[[], object]
) -> T:
    """`fn()` on a worker thread, raced against the client's disconnect.

    If the client leaves first, `on_disconnect()` runs (it should make `fn` stop, e.g. by
    cancelling its provider call), the thread is no longer waited for (it ends on its own,
    doing its own cleanup) and ClientDisconnected is raised. The watcher is a bare asyncio
    task that cancels this one: a task group would cost more than the rest of the hop.
    """
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:
            return  # a receive channel that cannot say: nothing to watch
        left = True
        on_disconnect()
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:  # only the watcher cancelled this task
            raise ClientDisconnected() from None
        raise
    finally:
        watcher.cancel()
