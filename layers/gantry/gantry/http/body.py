"""Strict JSON bodies: a route class that refuses bad content types, bytes and shapes
before FastAPI's own parsing, so each failure gets its precise error."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from gantry.domain.errors import InvalidRequest, UnsupportedMediaType
from gantry.http.deps import scope_of


async def parse_json_object(request: Request) -> None:
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{content_type or '(none)'}'. "
            "Send the body as JSON with Content-Type: application/json.",
            code="unsupported_media_type",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid UTF-8 (byte {exc.start}). Encode JSON as UTF-8.",
            code="invalid_encoding",
        ) from None
    if not text.strip():
        raise InvalidRequest("The request body is empty. Send a JSON object.", code="invalid_json")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}. Send a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"The request body must be a JSON object, not {type(value).__name__}.",
            code="invalid_json",
        )
    request._json = value  # Starlette's cache: FastAPI reads this instead of parsing again.


class JSONBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        scope = scope_of(self.dependant)

        async def checked(request: Request) -> Response:
            if scope is not None:  # who is calling is answered before what they sent
                await scope(request, None)
            await parse_json_object(request)
            return await handler(request)

        return checked
