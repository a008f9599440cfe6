"""Domain failures. They carry no HTTP: `gantry.http.errors` maps each class to a status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class GantryError(Exception):
    default_code: str = "internal_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.details = dict(details) if details else None
        self.retry_after = retry_after


class InvalidRequest(GantryError):
    default_code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class ContentPolicyViolation(InvalidRequest):
    default_code = "content_policy_violation"


class Unauthenticated(GantryError):
    default_code = "invalid_api_key"


class PermissionDenied(GantryError):
    default_code = "insufficient_scope"


class NotFound(GantryError):
    default_code = "not_found"


class Conflict(GantryError):
    default_code = "conflict"


class Gone(GantryError):
    """A model or route past its sunset date."""

    default_code = "endpoint_retired"


class PayloadTooLarge(GantryError):
    default_code = "payload_too_large"


class UnsupportedMediaType(GantryError):
    default_code = "unsupported_media_type"


class RateLimited(GantryError):
    default_code = "rate_limit_exceeded"
    retryable = True


class QuotaExceeded(GantryError):
    default_code = "insufficient_quota"


class ModelOutputInvalid(GantryError):
    default_code = "model_output_invalid"
    retryable = True


class ServiceUnavailable(GantryError):
    default_code = "service_unavailable"
    retryable = True


class ModelTimeout(GantryError):
    default_code = "model_timeout"
    retryable = True
