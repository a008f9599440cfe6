"""/v1/keys: API key management. Timestamps are unix seconds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gantry.domain.key_management import (
    DEFAULT_GRACE_SECONDS,
    MAX_GRACE_SECONDS,
    IssuedKey,
    key_status,
)
from gantry.domain.keys import SCOPES, KeyRecord
from gantry.domain.orgs import Limits
from gantry.http.schemas.base import StrictRequest, WireModel

Status = Literal["active", "expired", "revoked", "rotating"]

_SCOPES_HELP = f"Scopes the key holds, each one the calling key holds: {', '.join(sorted(SCOPES))}."
_LIMITS_HELP = (
    "Per-key limits (requests_per_minute, request_burst, tokens_per_minute, tokens_per_day, "
    "concurrent_requests, monthly_budget_usd); each at most the organization's."
)


_METADATA_HELP = (
    'Up to 16 string pairs. `semantic_cache: "threshold=0.95"` opts the key\'s chat '
    "requests into the semantic cache."
)


class KeyCreateRequest(StrictRequest):
    name: str = Field(min_length=1, max_length=256)
    scopes: list[str] = Field(max_length=len(SCOPES), description=_SCOPES_HELP)
    expires_at: int | None = Field(default=None, description="Expiry (unix seconds, future).")
    limits: dict[str, Any] | None = Field(default=None, description=_LIMITS_HELP)
    org_id: str | None = Field(
        default=None, max_length=128, description="The calling key's organization (default)."
    )
    metadata: dict[str, str] | None = Field(default=None, description=_METADATA_HELP)


class KeyUpdateRequest(StrictRequest):
    """Only the fields sent change; null clears `limits` or `expires_at`."""

    name: str | None = Field(default=None, min_length=1, max_length=256)
    scopes: list[str] | None = Field(default=None, max_length=len(SCOPES))
    expires_at: int | None = None
    limits: dict[str, Any] | None = Field(default=None, description=_LIMITS_HELP)
    metadata: dict[str, str] | None = Field(default=None, description=_METADATA_HELP)


class KeyRotateRequest(StrictRequest):
    grace_seconds: int = Field(
        default=DEFAULT_GRACE_SECONDS,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old key stays valid (never beyond its own expiry).",
    )


class ApiKey(WireModel):
    id: str
    object: Literal["api_key"]
    name: str
    org_id: str
    scopes: list[str]
    created_at: int
    created_by: str
    last_used_at: int | None
    expires_at: int | None
    revoked_at: int | None
    status: Status
    limits: dict[str, float] | None
    rotated_from: str | None
    rotated_to: str | None
    metadata: dict[str, str] | None


class CreatedApiKey(ApiKey):
    key: str = Field(description="The full key, shown only in this response.")


class ApiKeyList(WireModel):
    object: Literal["list"]
    data: list[ApiKey]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedApiKey(WireModel):
    id: str
    object: Literal["api_key"]
    deleted: Literal[True]
    revoked_at: int


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def _limits(limits: Limits | None) -> dict[str, int | float] | None:
    if limits is None:
        return None
    return {name: value for name, value in limits.as_dict().items() if value is not None}


def api_key_object(record: KeyRecord, now: float) -> dict[str, Any]:
    """A key as the API and the CLI show it: never its secret or HMAC."""
    return {
        "id": record.key_id,
        "object": "api_key",
        "name": record.name,
        "org_id": record.org_id,
        "scopes": sorted(record.scopes),
        "created_at": int(record.created_at),
        "created_by": record.created_by,
        "last_used_at": _seconds(record.last_used_at),
        "expires_at": _seconds(record.expires_at),
        "revoked_at": _seconds(record.revoked_at),
        "status": key_status(record, now),
        "limits": _limits(record.limits),
        "rotated_from": record.rotated_from,
        "rotated_to": record.rotated_to,
        "metadata": record.metadata or None,
    }


def issued_key_object(issued: IssuedKey, now: float) -> dict[str, Any]:
    return {**api_key_object(issued.record, now), "key": issued.api_key}
