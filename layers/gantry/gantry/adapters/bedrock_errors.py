"""Bedrock's failures as Gantry's domain errors.

    ThrottlingException, ServiceQuotaExceededException,     ProviderThrottled (503, Retry-After)
    ModelNotReadyException
    ModelTimeoutException, read timeouts                    ProviderTimeout (504)
    InternalServerException, ServiceUnavailableException,   ProviderUnavailable (503, retried)
    ModelStreamErrorException, ModelErrorException,
    connection errors and resets
    ValidationException "too long" / "max input"            ContextLengthExceeded (400)
    ValidationException otherwise                           InvalidRequest model_rejected_request
    AccessDeniedException, ResourceNotFoundException,       ProviderMisconfigured (503, final)
    bad credentials

Errors arrive as `ClientError`s (buffered calls), `EventStreamError`s (exception events
inside ConverseStream) or `BotoCoreError`s (the connection).
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

from gantry.adapters.provider_refusals import context_refused, says_too_long
from gantry.domain.errors import GantryError, InvalidRequest
from gantry.domain.provider_errors import (
    ProviderMisconfigured,
    ProviderOutputInvalid,
    ProviderThrottled,
    ProviderTimeout,
    ProviderUnavailable,
)
from gantry.domain.registry import ModelSpec

_THROTTLED = {"throttlingexception", "servicequotaexceededexception", "modelnotreadyexception"}
_TIMEOUT = {"modeltimeoutexception"}
_UNAVAILABLE = {
    "internalserverexception",
    "serviceunavailableexception",
    "modelstreamerrorexception",
    "modelerrorexception",
}
_MISCONFIGURED = {
    "accessdeniedexception",
    "resourcenotfoundexception",
    "unrecognizedclientexception",
    "expiredtokenexception",
    "invalidsignatureexception",
}


def service_error(
    spec: ModelSpec,
    code: str,
    message: str,
    status: int = 0,
    *,
    prompt_tokens: int = 0,
    max_tokens: int = 0,
    timeout: float | None = None,
) -> GantryError:
    key = code.lower()
    name = f"Bedrock, serving '{spec.id}',"
    if key in _THROTTLED or status == 429:
        return ProviderThrottled(f"{name} is throttling requests; retry shortly.")
    if key in _TIMEOUT:
        return ProviderTimeout(spec.id, timeout)
    if key in _UNAVAILABLE or status >= 500:
        return ProviderUnavailable(f"{name} failed ({code}); retry shortly.")
    if key in _MISCONFIGURED or status in (401, 403, 404):
        return ProviderMisconfigured(f"{name} refused the deployment's access ({code}).")
    if says_too_long(message):
        return context_refused(spec, prompt_tokens, max_tokens)
    return InvalidRequest(
        f"{name} refused the request: {message[:300] or code}",
        code="model_rejected_request",
    )


def client_error(
    spec: ModelSpec,
    error: ClientError,
    *,
    prompt_tokens: int = 0,
    max_tokens: int = 0,
    timeout: float | None = None,
) -> GantryError:
    info = error.response.get("Error", {})
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return service_error(
        spec,
        str(info.get("Code", "")),
        str(info.get("Message", "")),
        status,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        timeout=timeout,
    )


def connection_error(spec: ModelSpec, error: BotoCoreError, timeout: float) -> GantryError:
    if isinstance(error, ReadTimeoutError):
        return ProviderTimeout(spec.id, timeout)
    if isinstance(error, ConnectTimeoutError | EndpointConnectionError):
        return ProviderUnavailable(
            f"Bedrock, serving '{spec.id}', cannot be reached; retry shortly.",
            reason="provider_unreachable",
        )
    return ProviderUnavailable(
        f"Bedrock, serving '{spec.id}', closed the connection; retry shortly.",
        reason="connection_reset",
    )


def mapped(
    spec: ModelSpec,
    error: Exception,
    *,
    prompt_tokens: int = 0,
    max_tokens: int = 0,
    timeout: float = 0.0,
) -> Exception:
    """Any exception from a botocore call as a domain error (others unchanged)."""
    if isinstance(error, ResponseParserError):
        return ProviderOutputInvalid(
            f"Bedrock returned a response for '{spec.id}' that could not be parsed. Retry; if "
            "it persists, use another model."
        )
    if isinstance(error, ClientError):
        return client_error(
            spec, error, prompt_tokens=prompt_tokens, max_tokens=max_tokens, timeout=timeout
        )
    if isinstance(error, BotoCoreError):
        return connection_error(spec, error, timeout)
    return error
