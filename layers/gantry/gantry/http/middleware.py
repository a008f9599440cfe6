"""Outermost ASGI middleware: request ids, timing headers, body limits, last-resort errors."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gantry.domain.errors import PayloadTooLarge
from gantry.http.errors import internal_error_response, render_gantry_error
from gantry.http.ids import unique_hex
from gantry.http.timing import mark_start

logger = logging.getLogger("gantry.http")

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return f"req_{unique_hex()}"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than the limit of {limit} bytes. Send fewer or smaller "
        "inputs per request.",
        details={"max_body_bytes": limit},
    )


class GantryMiddleware:
    """Gives every response `x-request-id` and `openai-processing-ms`, enforces the body
    size limit while the body streams in, and turns any unhandled exception into the error
    envelope (never a bare 500 with a trace)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        client_id = _client_request_id(scope)
        request_id = client_id or new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        # Usage is recorded once per billing id, so a client must not choose it: an id the
        # client sent gets a suffix of ours (an in-process caller may have set it already).
        state.setdefault(
            "billing_id",
            request_id if client_id is None else f"{client_id}.{unique_hex()}",
        )
        mark_start(scope, started)
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                elapsed_ms = int((time.perf_counter() - started) * 1000)
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"openai-processing-ms", str(elapsed_ms).encode()))
                message["headers"] = headers
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _drain(receive, max(4 * self.max_body_bytes, 16 * 1024 * 1024))
            response = render_gantry_error(_too_large(self.max_body_bytes), request_id)
            await response(scope, receive, send_with_headers)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _too_large(self.max_body_bytes)
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": request_id})
            if response_started:
                raise
            await internal_error_response(request_id)(scope, receive, send_with_headers)


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _CLIENT_ID.match(candidate):
                return candidate
            break
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _drain(receive: Receive, limit: int) -> None:
    """Read and discard what the client already sent, up to a bound, so it sees our answer."""
    seen = 0
    more: Any = True
    while more and seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        more = message.get("more_body", False)
