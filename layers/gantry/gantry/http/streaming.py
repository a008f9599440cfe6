"""Streaming chat and text completions: provider events in, OpenAI chunks out as SSE.

Admission happens before the first byte, so every refusal is an ordinary HTTP error, and so
does the provider's first event (a provider that fails at once is an ordinary error too).
After that a failure becomes one `data: {"error": ...}` event and the stream ends without
`[DONE]`. Whatever ends the stream (success, failure, the client leaving), the provider is
stopped and the tokens generated so far are settled exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from gantry.domain.deadlines import CancelToken, caller_scope
from gantry.domain.errors import GantryError
from gantry.domain.inference import OutcomeT, Plan
from gantry.domain.keys import Principal
from gantry.domain.metering import Actual, Admission
from gantry.domain.model_access import require_visible
from gantry.http.disconnect import run_unless_disconnected
from gantry.http.errors import billing_id_of, envelope, request_id_of, status_of
from gantry.http.responses import fallback_headers, model_headers, new_id, usage
from gantry.http.sse import DONE, PING, EventStreamResponse, data_frame
from gantry.ports import ChoiceDone, StreamEvent, TextDelta
from gantry.runtime import Runtime

logger = logging.getLogger("gantry.http")


class _End:
    pass


END = _End()


class ProviderPump:
    """Pulls provider events on worker threads and keeps the usage tally.

    `close()` may be called from the event loop while a worker is inside `next()`: the
    worker then closes the provider itself, so generation stops after at most one token.
    """

    def __init__(self, events: Iterator[StreamEvent]) -> None:
        self._events = events
        self._lock = threading.Lock()
        self._closed = False
        self.generated: dict[int, int] = {}
        self.finished: dict[int, int] = {}
        self.texts: dict[int, list[str]] = {}
        self.finish_reasons: dict[int, str] = {}

    def next(self) -> StreamEvent | _End:
        with self._lock:
            if self._closed:
                return END
            try:
                event = next(self._events)
            except StopIteration:
                return END
            if isinstance(event, TextDelta):
                self.generated[event.index] = self.generated.get(event.index, 0) + event.tokens
                self.texts.setdefault(event.index, []).append(event.text)
            else:
                self.finished[event.index] = event.completion_tokens
                self.finish_reasons[event.index] = event.finish_reason
            if self._closed:
                self._stop_provider()
            return event

    def close(self) -> None:
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self._stop_provider()
            finally:
                self._lock.release()

    def _stop_provider(self) -> None:
        close = getattr(self._events, "close", None)  # generators stop producing on close()
        if close is not None:
            close()

    def settled_tokens(self) -> int:
        """`completion_tokens` once no provider call is in flight any more."""
        with self._lock:
            return self.completion_tokens

    @property
    def completion_tokens(self) -> int:
        """Exact counts for finished choices, tokens generated so far for the others."""
        running = sum(n for i, n in self.generated.items() if i not in self.finished)
        return sum(self.finished.values()) + running

    def text(self, index: int = 0) -> str:
        return "".join(self.texts.get(index, ()))


@dataclass(frozen=True)
class StreamResult:
    """What a stream produced (its first choice), for a caller that keeps it."""

    text: str
    finish_reason: str | None  # None: the stream ended before the choice finished
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class _Completion:
    """Hands the stream's result to `callback` exactly once: before `[DONE]` when the stream
    succeeds (so a client that saw `[DONE]` can read it back), after settlement otherwise."""

    def __init__(
        self, callback: Callable[[StreamResult], None], plan: Plan[Any], pump: ProviderPump
    ) -> None:
        self._callback: Callable[[StreamResult], None] | None = callback
        self._plan = plan
        self._pump = pump
        self._lock = threading.Lock()

    def run(self) -> None:
        with self._lock:
            callback, self._callback = self._callback, None
        if callback is None:
            return
        completion = self._pump.settled_tokens()
        prompt = self._plan.prompt_tokens
        cost = self._plan.spec.cost_usd(prompt, completion)
        reason = self._pump.finish_reasons.get(0)
        callback(StreamResult(self._pump.text(0), reason, prompt, completion, cost))


@dataclass
class ChunkFormat:
    """How one endpoint shapes its chunks (chat.completion.chunk or text_completion)."""

    object: str
    model: str
    fingerprint: str
    chat: bool
    include_usage: bool
    id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=lambda: int(time.time()))

    def chunk(self, choices: list[dict[str, Any]], usage_body: Any = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
        }
        if self.include_usage or usage_body is not None:
            body["usage"] = usage_body
        return body

    def choice(
        self, index: int, text: str | None, finish: str | None, first: bool = False
    ) -> dict[str, Any]:
        if not self.chat:
            return {"text": text or "", "index": index, "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {}
        if first:
            delta = {"role": "assistant", "content": "", "refusal": None}
        elif text is not None:
            delta = {"content": text}
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


async def stream_response(
    rt: Runtime,
    request: Request,
    principal: Principal,
    plan: Plan[OutcomeT],
    fmt: ChunkFormat,
    usage_interval: int | None,
    on_complete: Callable[[StreamResult], None] | None = None,
) -> EventStreamResponse:
    assert plan.stream is not None
    require_visible(plan.spec, principal.org_id)
    meter = rt.meter
    request_id = request_id_of(request) or ""
    billing_id = billing_id_of(request) or request_id
    admission = await _call(
        meter.inline, meter.admit, billing_id, principal, plan.endpoint, plan.spec, plan.estimate
    )
    pump = ProviderPump(plan.stream())
    left = CancelToken()

    def first_event() -> StreamEvent | _End:
        # Until its first event a stream is like a buffered call: a client that leaves
        # cancels the provider call (an upstream request is aborted).
        with caller_scope(left):
            return pump.next()

    try:
        first = await run_unless_disconnected(request, first_event, left.cancel)
    except BaseException:
        pump.close()
        await _call(meter.inline, meter.release, admission)
        raise
    requested, plan = plan.spec, plan.as_served()  # a fallback may serve the stream
    fmt.model = plan.spec.id
    completion = _Completion(on_complete, plan, pump) if on_complete is not None else None
    finish = _Once(lambda: _finish(rt, plan, admission, pump, completion))
    frames = _frames(rt, plan, fmt, pump, first, usage_interval, request_id, completion, finish)
    return EventStreamResponse(
        frames,
        {**model_headers(plan.spec), **admission.headers, **fallback_headers(requested, plan.spec)},
        on_close=finish,
    )


class _Once:
    """Runs `action` the first time it is called. The stream calls it when it ends; the
    response calls it too, for a stream abandoned before its first frame was produced
    (an async generator that never started runs no `finally`)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            action, self._action = self._action, None
        if action is not None:
            action()


def _finish(
    rt: Runtime,
    plan: Plan[OutcomeT],
    admission: Admission,
    pump: ProviderPump,
    completion: _Completion | None,
) -> None:
    pump.close()
    _settle_once(rt, plan, admission, pump, handoff=completion)


async def _call(inline: bool, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args) if inline else await run_in_threadpool(fn, *args)


async def _frames(
    rt: Runtime,
    plan: Plan[OutcomeT],
    fmt: ChunkFormat,
    pump: ProviderPump,
    first: StreamEvent | _End,
    usage_interval: int | None,
    request_id: str,
    completion: _Completion | None,
    finish: Callable[[], None],
) -> AsyncIterator[bytes]:
    heartbeat = rt.settings.heartbeat_seconds
    started: set[int] = set()
    next_report = usage_interval or 0
    event = first
    try:
        while not isinstance(event, _End):
            if event.index not in started:
                started.add(event.index)
                if fmt.chat:
                    yield data_frame(fmt.chunk([fmt.choice(event.index, None, None, first=True)]))
            if isinstance(event, TextDelta):
                if event.text:
                    yield data_frame(fmt.chunk([fmt.choice(event.index, event.text, None)]))
            elif isinstance(event, ChoiceDone):
                yield data_frame(fmt.chunk([fmt.choice(event.index, None, event.finish_reason)]))
            if usage_interval and pump.completion_tokens >= next_report:
                while next_report <= pump.completion_tokens:
                    next_report += usage_interval
                running = usage(plan.prompt_tokens, pump.completion_tokens)
                yield data_frame(fmt.chunk([], running))
            waiting = asyncio.ensure_future(run_in_threadpool(pump.next))
            try:
                while not waiting.done():
                    done, _ = await asyncio.wait({waiting}, timeout=heartbeat)
                    if not done:
                        yield PING
            finally:
                if not waiting.done():
                    pump.close()
            event = waiting.result()
        if fmt.include_usage:
            yield data_frame(fmt.chunk([], usage(plan.prompt_tokens, pump.completion_tokens)))
        if completion is not None:
            await run_in_threadpool(completion.run)
        yield DONE
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:
        yield data_frame(_error_body(exc, request_id))
    finally:
        finish()


def _error_body(exc: Exception, request_id: str) -> dict[str, Any]:
    if isinstance(exc, GantryError):
        _, kind = status_of(exc)
        return envelope(
            message=exc.message,
            kind=kind,
            code=exc.code,
            param=exc.param,
            request_id=request_id,
            retryable=exc.retryable,
            details=exc.details,
        )
    logger.exception("stream failed", extra={"request_id": request_id})
    return envelope(
        message=(
            "The stream failed after it started. Tokens produced so far are billed; retry "
            f"the request, and report the request id {request_id} if it persists."
        ),
        kind="server_error",
        code="internal_error",
        param=None,
        request_id=request_id,
        retryable=True,
    )


def _settle_once(
    rt: Runtime,
    plan: Plan[OutcomeT],
    admission: Admission,
    pump: ProviderPump,
    handoff: _Completion | None = None,
) -> None:
    """Settle on a worker thread that outlives this (possibly cancelled) stream, once the
    provider call in flight (if any) has returned, so its token is billed too."""

    def settle() -> None:
        completion = pump.settled_tokens()
        cost = plan.spec.cost_usd(plan.prompt_tokens, completion)
        try:
            rt.meter.settle(admission, Actual(plan.prompt_tokens, completion, cost))
        except Exception:
            logger.exception("settling a stream failed", extra={"request_id": admission.request_id})
        if handoff is not None:
            try:
                handoff.run()
            except Exception:
                logger.exception(
                    "keeping a stream's result failed", extra={"request_id": admission.request_id}
                )

    threading.Thread(target=settle, name="gantry-settle").start()
