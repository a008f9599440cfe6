"""The one error envelope, and the mapping from failures to HTTP statuses."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gantry.domain import errors as e
from gantry.http.disconnect import ClientDisconnected

logger = logging.getLogger("gantry.http")

# (status, OpenAI error type), most specific class first.
_STATUS: tuple[tuple[type[e.GantryError], int, str], ...] = (
    (e.PayloadTooLarge, 413, "invalid_request_error"),
    (e.UnsupportedMediaType, 415, "invalid_request_error"),
    (e.InvalidRequest, 400, "invalid_request_error"),
    (e.Unauthenticated, 401, "authentication_error"),
    (e.PermissionDenied, 403, "permission_error"),
    (e.NotFound, 404, "invalid_request_error"),
    (e.Conflict, 409, "invalid_request_error"),
    (e.Gone, 410, "invalid_request_error"),
    (e.QuotaExceeded, 429, "insufficient_quota"),
    (e.RateLimited, 429, "rate_limit_error"),
    (e.ModelOutputInvalid, 502, "server_error"),
    (e.ServiceUnavailable, 503, "server_error"),
    (e.ModelTimeout, 504, "server_error"),
)

DOC_PATH = "/docs/errors"
# nginx's "client closed request": logged, never seen by the client that left.
CLIENT_CLOSED_REQUEST = 499


def status_of(error: e.GantryError) -> tuple[int, str]:
    for cls, status, kind in _STATUS:
        if isinstance(error, cls):
            return status, kind
    return 500, "server_error"


def envelope(
    *,
    message: str,
    kind: str,
    code: str,
    param: str | None,
    request_id: str | None,
    retryable: bool,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code,
            "request_id": request_id,
            "retryable": retryable,
            "doc_url": f"{DOC_PATH}#{code}",
            "details": dict(details) if details else None,
        }
    }


def error_response(
    status: int,
    body: dict[str, Any],
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        content=json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def request_id_of(request: Request) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def billing_id_of(request: Request) -> str | None:
    """The id the request's usage is recorded under (never one the client chose)."""
    bid = request.scope.get("state", {}).get("billing_id")
    return bid if isinstance(bid, str) else None


def render_gantry_error(error: e.GantryError, request_id: str | None) -> Response:
    status, kind = status_of(error)
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(max(1, round(error.retry_after + 0.499)))
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="gantry"'
    body = envelope(
        message=error.message,
        kind=kind,
        code=error.code,
        param=error.param,
        request_id=request_id,
        retryable=error.retryable,
        details=error.details,
    )
    return error_response(status, body, headers)


def internal_error_response(request_id: str | None) -> Response:
    body = envelope(
        message=(
            "The server had an error while processing your request. Retry, and if the error "
            f"persists, contact support with the request id {request_id}."
        ),
        kind="server_error",
        code="internal_error",
        param=None,
        request_id=request_id,
        retryable=True,
    )
    return error_response(500, body)


# --- request validation -----------------------------------------------------------------


_TAG = re.compile(r"^(str|int|float|bool|none|[A-Z].*|.*[\[\]-].*)$")


def _param(loc: Sequence[Any]) -> str | None:
    """Dotted path of the offending field; union member tags such as 'list[str]' dropped."""
    parts = [
        p for p in loc if p not in ("body", "query", "path", "header") and not _TAG.match(str(p))
    ]
    if not parts:
        return None
    out = str(parts[0])
    for part in parts[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def validation_error(errors: Sequence[Mapping[str, Any]]) -> e.InvalidRequest:
    """Turn pydantic/FastAPI validation errors into one clear InvalidRequest."""
    field = _param(tuple(errors[0].get("loc", ()))[:2])
    same_field = [err for err in errors if _param(tuple(err.get("loc", ()))[:2]) == field]

    # In a union, an error that is not about the type means the value had the right type
    # for that member and broke a constraint: that is the useful one to report.
    def usefulness(err: Mapping[str, Any]) -> tuple[bool, int]:
        return (
            not str(err.get("type", "")).endswith("_type"),
            len(_param(err.get("loc", ())) or ""),
        )

    best: Mapping[str, Any] = max(same_field, key=usefulness)
    first = dict(best)
    kind = str(first.get("type", ""))
    param = _param(tuple(first.get("loc", ())))
    given = first.get("input")
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "invalid JSON")
        return e.InvalidRequest(
            f"We could not parse the JSON body of your request ({detail}). "
            "Send a JSON object with Content-Type: application/json.",
            code="invalid_json",
        )
    if kind == "extra_forbidden":
        return e.InvalidRequest(
            f"Unrecognized request argument supplied: '{param}'. Remove it; see /docs for "
            "the parameters this route accepts.",
            code="unknown_parameter",
            param=param,
        )
    if kind == "missing":
        return e.InvalidRequest(
            f"Missing required parameter: '{param}'.",
            code="missing_required_parameter",
            param=param,
        )
    if param is None and kind in ("model_attributes_type", "dict_type", "model_type"):
        return e.InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if kind in _TYPE_NAMES or kind.endswith("_type"):
        alternatives = [
            _TYPE_NAMES.get(str(err["type"]), str(err["type"]).removesuffix("_type"))
            for err in same_field
            if _param(err.get("loc", ())) == param and str(err["type"]).endswith("_type")
        ]
        expected = " or ".join(dict.fromkeys(alternatives)) or _TYPE_NAMES.get(kind, kind)
        return e.InvalidRequest(
            f"Invalid type for '{param}': expected {expected}, but got {_json_type(given)}.",
            code="invalid_type",
            param=param,
        )
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return e.InvalidRequest(
        f"Invalid value for '{param}': {message}.".replace("..", "."),
        code="invalid_value",
        param=param,
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def install_error_handlers(app: FastAPI) -> None:
    async def on_gantry_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, e.GantryError)
        return render_gantry_error(exc, request_id_of(request))

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render_gantry_error(validation_error(exc.errors()), request_id_of(request))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        rid = request_id_of(request)
        if exc.status_code == 404:
            error: e.GantryError = e.NotFound(
                f"Unknown route: {request.method} {request.url.path}. See /docs for the API.",
                code="not_found",
            )
            return render_gantry_error(error, rid)
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            body = envelope(
                message=(
                    f"Method {request.method} is not allowed on {request.url.path}. "
                    f"Allowed: {allowed or 'none'}."
                ),
                kind="invalid_request_error",
                code="method_not_allowed",
                param=None,
                request_id=rid,
                retryable=False,
            )
            return error_response(405, body, {"allow": allowed} if allowed else None)
        if exc.status_code == 400:
            return render_gantry_error(
                e.InvalidRequest(
                    "We could not parse the body of your request. Send a JSON object.",
                    code="invalid_json",
                ),
                rid,
            )
        body = envelope(
            message=str(exc.detail),
            kind="invalid_request_error" if exc.status_code < 500 else "server_error",
            code=f"http_{exc.status_code}",
            param=None,
            request_id=rid,
            retryable=exc.status_code >= 500,
        )
        return error_response(exc.status_code, body)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        logger.info(
            "client disconnected before the answer; the call was cancelled",
            extra={"request_id": request_id_of(request)},
        )
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    app.add_exception_handler(e.GantryError, on_gantry_error)
    app.add_exception_handler(ClientDisconnected, on_disconnect)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
