"""Time budgets and cancellation for one provider call, visible to the adapter running it.

The resilience rules decide how long an attempt may take and when it is abandoned (a
hedged call that lost, a client that left); adapters read `current_call()` to apply the
deadline to their own I/O and to stop work when cancelled. A caller that may leave runs
its calls in a `caller_scope`: cancelling its token cancels the attempt in flight. Nothing
here blocks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Deadline:
    """An absolute point on a monotonic clock."""

    at: float
    clock: Callable[[], float]

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float]) -> Deadline:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def within(self, seconds: float) -> Deadline:
        """This deadline or `seconds` from now, whichever comes first (nested budgets)."""
        return Deadline(min(self.at, self.clock() + seconds), self.clock)


class CancelToken:
    """Set once; callbacks registered before or after run exactly once, on the canceller's
    thread (or at once if it is already set)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._callbacks: list[Callable[[], object]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Run `callback` on cancellation; returns a function that unregisters it."""
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return lambda: self._discard(callback)
        callback()
        return lambda: None

    def _discard(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


@dataclass(frozen=True)
class CallContext:
    deadline: Deadline
    cancel: CancelToken = field(default_factory=CancelToken)

    def timeout(self) -> float:
        return self.deadline.remaining()


class Abandoned(Exception):
    """The caller stopped waiting (its client disconnected): the call is neither retried nor
    failed over, and an answer that still arrives is thrown away."""


_current: ContextVar[CallContext | None] = ContextVar("gantry_provider_call", default=None)
_caller: ContextVar[CancelToken | None] = ContextVar("gantry_caller", default=None)


def current_call() -> CallContext | None:
    """The budget and cancellation of the provider call running on this thread, if any."""
    return _current.get()


@contextmanager
def call_scope(context: CallContext) -> Iterator[CallContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


@contextmanager
def caller_scope(cancel: CancelToken) -> Iterator[CancelToken]:
    """Provider calls made inside belong to a caller that may leave: when `cancel` fires,
    the attempt in flight is cancelled and no further attempt starts."""
    token = _caller.set(cancel)
    try:
        yield cancel
    finally:
        _caller.reset(token)


def caller_left() -> bool:
    caller = _caller.get()
    return caller is not None and caller.cancelled


def attempt_context(deadline: Deadline) -> CallContext:
    """The context of one provider attempt: cancelled on its own (a hedge that lost) or
    with its caller."""
    context = CallContext(deadline)
    caller = _caller.get()
    if caller is not None:
        caller.on_cancel(context.cancel.cancel)
    return context
