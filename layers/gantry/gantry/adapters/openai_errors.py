"""An OpenAI-compatible server's failures as Gantry's domain errors.

429                        ProviderThrottled (its Retry-After / retry-after-ms honoured)
408, 504                   ProviderTimeout
5xx                        ProviderUnavailable (transient)
401, 403, 404              ProviderMisconfigured (credentials, model name: not transient)
400, 413, 422 ...          ContextLengthExceeded when the server says the prompt is too
                           long; ContentPolicyViolation when its filter refused; else
                           InvalidRequest `model_rejected_request` with its message
connection refused/reset,  ProviderUnavailable (transient)
body cut short
read timeout               ProviderTimeout
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from gantry.adapters.provider_refusals import (
    context_refused,
    policy_refused,
    says_policy,
    says_too_long,
)
from gantry.domain.errors import GantryError, InvalidRequest
from gantry.domain.provider_errors import (
    ProviderMisconfigured,
    ProviderOutputInvalid,
    ProviderThrottled,
    ProviderTimeout,
    ProviderUnavailable,
)
from gantry.domain.registry import ModelSpec

_MAX_MESSAGE = 300


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds; HTTP dates are ignored)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / scale)
            except ValueError:
                continue
    return None


def error_message(body: bytes) -> tuple[str, str]:
    """The server's (message, code) from an OpenAI error body, or its text."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")[:_MAX_MESSAGE].strip(), ""
    error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("detail") or "")
        code = str(error.get("code") or error.get("type") or "")
        return message[:_MAX_MESSAGE], code
    return str(error)[:_MAX_MESSAGE], ""


def status_error(
    spec: ModelSpec,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    prompt_tokens: int = 0,
    max_tokens: int = 0,
) -> GantryError:
    message, code = error_message(body)
    name = f"The provider serving '{spec.id}'"
    if status == 429:
        return ProviderThrottled(
            f"{name} is rate limiting Gantry; retry shortly.", retry_after=retry_after(headers)
        )
    if status in (408, 504):
        return ProviderTimeout(spec.id, None)
    if status >= 500:
        return ProviderUnavailable(
            f"{name} failed (HTTP {status}); retry shortly.",
            retry_after=retry_after(headers),
            details={"provider_status": status},
        )
    if status in (401, 403):
        return ProviderMisconfigured(f"{name} refused Gantry's credentials (HTTP {status}).")
    if status == 404:
        return ProviderMisconfigured(f"{name} does not know the model (HTTP 404).")
    return request_error(spec, message, code, prompt_tokens=prompt_tokens, max_tokens=max_tokens)


def request_error(
    spec: ModelSpec, message: str, code: str, *, prompt_tokens: int = 0, max_tokens: int = 0
) -> GantryError:
    """A refusal of the request itself (HTTP 4xx, or an error event in a stream)."""
    if code == "context_length_exceeded" or says_too_long(message):
        return context_refused(spec, prompt_tokens, max_tokens)
    if code in ("content_policy_violation", "content_filter") or says_policy(message):
        return policy_refused()
    return InvalidRequest(
        f"The provider serving '{spec.id}' refused the request: {message or 'no reason given'}",
        code="model_rejected_request",
    )


def transport_error(spec: ModelSpec, error: httpx.HTTPError, timeout: float) -> GantryError:
    name = f"The provider serving '{spec.id}'"
    if isinstance(error, httpx.ConnectTimeout | httpx.ConnectError):
        return ProviderUnavailable(
            f"{name} cannot be reached; retry shortly.", reason="provider_unreachable"
        )
    if isinstance(error, httpx.TimeoutException):
        return ProviderTimeout(spec.id, timeout)
    if isinstance(error, httpx.DecodingError):
        return ProviderOutputInvalid(f"{name} sent a body that could not be decoded.")
    return ProviderUnavailable(
        f"{name} closed the connection before answering; retry shortly.",
        reason="connection_reset",
    )


def invalid_output(spec: ModelSpec, what: str) -> ProviderOutputInvalid:
    return ProviderOutputInvalid(
        f"The provider serving '{spec.id}' returned an invalid response ({what}). Retry; if "
        "it persists, use another model."
    )
