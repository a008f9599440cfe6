"""The route table at work: deprecated routes answer with `Deprecation`, `Sunset` and
`Link` headers; retired routes answer 410 `endpoint_retired` naming their successor.
Time comes from the runtime's clock, so tests can move it."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gantry.domain.lifecycle import Lifecycle, RouteEntry, midnight
from gantry.http.errors import render_gantry_error
from gantry.http.responses import lifecycle_headers
from gantry.runtime import get_runtime


def route_entry(method: str, path: str) -> RouteEntry | None:
    return get_runtime().route_table.find(method, path)


def _sunset(value: bytes) -> float | None:
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError):
        return None


def merge_headers(headers: list[tuple[bytes, bytes]], lifecycle: Lifecycle) -> None:
    """Add the route's headers to a response that may already carry a model's: the Link
    relations accumulate; Deprecation and Sunset describe whichever ends first."""
    ours = {k.encode(): v.encode() for k, v in lifecycle_headers(lifecycle).items()}
    existing = {name.lower(): index for index, (name, _) in enumerate(headers)}
    if b"link" in existing and b"link" in ours:
        index = existing[b"link"]
        headers[index] = (b"link", headers[index][1] + b", " + ours.pop(b"link"))
    if b"sunset" in existing and lifecycle.sunset_on is not None:
        theirs = _sunset(headers[existing[b"sunset"]][1])
        if theirs is None or midnight(lifecycle.sunset_on) < theirs:
            for name in (b"sunset", b"deprecation"):
                if name in existing and name in ours:
                    headers[existing[name]] = (name, ours.pop(name))
        else:
            ours.pop(b"sunset", None)
            ours.pop(b"deprecation", None)
    for name, value in ours.items():
        if name not in existing:
            headers.append((name, value))


class DeprecationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = route_entry(scope["method"], scope["path"])
        if entry is None or not entry.lifecycle.announced:
            await self.app(scope, receive, send)
            return
        lifecycle = entry.lifecycle
        if lifecycle.retired(get_runtime().clock.now()):
            request_id = scope.get("state", {}).get("request_id")
            error = lifecycle.retired_error("endpoint_retired", None)
            response = render_gantry_error(
                error, request_id if isinstance(request_id, str) else None
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                merge_headers(headers, lifecycle)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
