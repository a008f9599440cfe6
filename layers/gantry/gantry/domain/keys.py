"""API keys and scopes: parsing, hashing, verification. Keys are stored only as HMACs."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from gantry.domain.errors import InvalidRequest
from gantry.domain.orgs import Limits

SCOPES = frozenset(
    {
        "models:read",
        "completions:write",
        "conversations:read",
        "conversations:write",
        "files:read",
        "files:write",
        "fine-tuning:read",
        "fine-tuning:write",
        "batches:read",
        "batches:write",
        "usage:read",
        "webhooks:write",
        "keys:read",
        "keys:write",
        "admin:full",
    }
)

KEY_PREFIX = "gnt"
_KEY_RE = re.compile(r"^gnt_([A-Za-z0-9]{4,40})_([A-Za-z0-9-]{16,256})$")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def has_scope(granted: frozenset[str], required: str) -> bool:
    """`admin:full` grants everything; `x:write` implies `x:read`."""
    if "admin:full" in granted or required in granted:
        return True
    resource, _, action = required.partition(":")
    return action == "read" and f"{resource}:write" in granted


def validate_scopes(scopes: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise InvalidRequest(
            f"Unknown scope(s) {', '.join(unknown)}. Valid scopes: {', '.join(sorted(SCOPES))}.",
            code="invalid_scope",
            param="scopes",
        )
    return frozenset(scopes)


def parse_api_key(raw: str) -> tuple[str, str] | None:
    """Split `gnt_<key_id>_<secret>` into its parts, or None if it is not shaped like a key."""
    match = _KEY_RE.match(raw)
    return (match.group(1), match.group(2)) if match else None


def _base62(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, digit = divmod(number, 62)
        out.append(_BASE62[digit])
    return "".join(reversed(out)) or "0"


def new_key_id() -> str:
    return _base62(secrets.token_bytes(9)).rjust(12, "0")[:12]


def new_api_key(key_id: str | None = None) -> tuple[str, str, str]:
    """A fresh key: (full key, key_id, secret). The secret is 32 random bytes."""
    key_id = key_id or new_key_id()
    secret = _base62(secrets.token_bytes(32))
    return f"{KEY_PREFIX}_{key_id}_{secret}", key_id, secret


def hash_secret(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(pepper: bytes, secret: str, stored_hmac: str) -> bool:
    return hmac.compare_digest(hash_secret(pepper, secret), stored_hmac)


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    org_id: str
    secret_hmac: str
    scopes: frozenset[str]
    name: str = ""
    created_at: float = 0.0
    created_by: str = ""
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    limits: Limits | None = None  # narrows the organization's limits, never widens them
    rotated_from: str | None = None
    rotated_to: str | None = None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified key, never its secret."""

    key_id: str
    org_id: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return has_scope(self.scopes, scope)
