"""One event loop on a background thread per process, for streamed network I/O that must
be cancellable from any thread: a stream abandoned by a hedge, a deadline or a client that
left stops at once and closes its connection, instead of running to completion on a
blocked worker thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class AsyncBridge:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            with self._lock:
                if self._loop is None:
                    loop = asyncio.new_event_loop()
                    thread = threading.Thread(
                        target=loop.run_forever, name="gantry-provider-io", daemon=True
                    )
                    thread.start()
                    self._loop = loop
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


_bridge: AsyncBridge | None = None
_bridge_lock = threading.Lock()


def bridge() -> AsyncBridge:
    """The process's bridge (its loop thread starts on first use)."""
    global _bridge
    if _bridge is None:
        with _bridge_lock:
            if _bridge is None:
                _bridge = AsyncBridge()
    return _bridge
