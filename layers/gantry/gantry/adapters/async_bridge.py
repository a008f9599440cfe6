"""One event loop on a background thread per process, for network I/O that must be
cancellable from any thread: a provider call abandoned by a hedge, a deadline or a client
that left stops at once and closes its connection, instead of running to completion on a
blocked worker thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from gantry.domain.deadlines import CancelToken

T = TypeVar("T")


class CallCancelled(Exception):
    """The call was cancelled through its CancelToken."""


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

    def run(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float | None,
        cancel: CancelToken | None = None,
    ) -> T:
        """Run `coro` on the loop and wait for it. Raises TimeoutError after `timeout` seconds
        and CallCancelled when `cancel` fires; either way the coroutine is cancelled."""
        future = self.submit(coro)
        unregister = cancel.on_cancel(future.cancel) if cancel is not None else None
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None
        except concurrent.futures.CancelledError:
            raise CallCancelled from None
        finally:
            if unregister is not None:
                unregister()


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
