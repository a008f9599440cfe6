"""How a model provider can fail, in terms the resilience rules and the client both understand.

Each class maps to the envelope through its base class (`gantry.http.errors`): throttling,
outages, resets and open circuits are 503 `service_unavailable` with
`details.subsystem = "model_provider"`; a provider that does not answer in time is 504
`model_timeout`; output that cannot be parsed is 502 `model_output_invalid`. `transient`
says whether Gantry itself may retry the call (the client-facing `retryable` flag is
separate: a misconfigured provider is not worth retrying for anyone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gantry.domain.errors import GantryError, ModelOutputInvalid, ModelTimeout, ServiceUnavailable

SUBSYSTEM = "model_provider"


def _details(reason: str, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"subsystem": SUBSYSTEM, "reason": reason, **(extra or {})}


class ProviderUnavailable(ServiceUnavailable):
    """The provider failed to answer: a 5xx, a reset connection, a stream cut short.

    `retry_after` is what the provider asked for (it paces Gantry's own retries); clients
    get it as Retry-After, or one second when the provider said nothing.
    """

    transient = True

    def __init__(
        self,
        message: str,
        *,
        reason: str = "provider_error",
        retry_after: float | None = None,
        transient: bool = True,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        client_wait = retry_after if retry_after is not None else (1.0 if transient else None)
        super().__init__(message, details=_details(reason, details), retry_after=client_wait)
        self.provider_retry_after = retry_after
        self.transient = transient
        self.retryable = transient


class ProviderThrottled(ProviderUnavailable):
    """The provider refused the call for load (HTTP 429, ThrottlingException)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, reason="provider_throttled", retry_after=retry_after)


class ProviderMisconfigured(ProviderUnavailable):
    """The deployment cannot reach the model (denied, unknown model, bad credentials)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="provider_configuration", transient=False)


class CircuitOpen(ProviderUnavailable):
    """Recent calls to this provider and model failed: fail fast until it recovers."""

    def __init__(self, model: str, retry_after: float) -> None:
        super().__init__(
            f"The provider serving '{model}' is failing, so requests to it are paused for "
            f"about {max(1, round(retry_after))} s while it recovers. Retry after that, or "
            "use another model.",
            reason="circuit_open",
            retry_after=retry_after,
            transient=False,
            details={"circuit_open": True, "model": model},
        )
        self.retryable = True  # by the client, after Retry-After; never by Gantry at once


class ProviderTimeout(ModelTimeout):
    """No answer within the attempt's share of the request's time budget (`seconds`), or the
    provider's own gateway timed out (`seconds` unknown)."""

    transient = True

    def __init__(self, model: str, seconds: float | None, *, transient: bool = True) -> None:
        within = f"within {seconds:.1f} s" if seconds else "in time"
        details: dict[str, Any] = {
            "subsystem": SUBSYSTEM,
            "suggestions": ["lower max_tokens", "stream: true"],
        }
        if seconds:
            details["timeout_seconds"] = round(seconds, 3)
        super().__init__(
            f"The model '{model}' did not answer {within}. Lower max_tokens, or stream the "
            "response (stream: true) to receive tokens as they are generated.",
            details=details,
        )
        self.transient = transient


class ProviderOutputInvalid(ModelOutputInvalid):
    """The provider answered with something that is not a valid response."""

    transient = False

    def __init__(self, message: str) -> None:
        super().__init__(message, details={"subsystem": SUBSYSTEM})


ProviderFailure = ProviderUnavailable | ProviderTimeout | ProviderOutputInvalid


def is_provider_failure(error: BaseException) -> bool:
    """A failure of the provider (not of the request): it counts against the circuit and
    may be served by a fallback model."""
    return isinstance(error, ProviderUnavailable | ProviderTimeout | ProviderOutputInvalid)


def is_transient(error: BaseException) -> bool:
    """Worth retrying the same call: throttling, 5xx, resets, timeouts with time left."""
    return isinstance(error, GantryError) and bool(getattr(error, "transient", False))
