"""Authenticating callers: bearer header -> verified Principal, with an in-process key cache."""

from __future__ import annotations

import threading
from collections.abc import Callable

from gantry.domain.errors import PermissionDenied, Unauthenticated
from gantry.domain.keys import KeyRecord, Principal, parse_api_key, secret_matches
from gantry.ports import Clock, KeyStore

_MALFORMED = (
    "The Authorization header must be 'Bearer gnt_<key_id>_<secret>'. "
    "Create keys with POST /v1/keys or the `gantry keys create` command."
)


class Authenticator:
    """Verifies keys against their stored HMAC.

    Key records are cached for `ttl_seconds` (at most a minute) so a warm request costs no
    database call; a revocation therefore reaches every process within the TTL, and at once
    in the process that calls `forget`.
    """

    def __init__(
        self,
        store: KeyStore,
        pepper: Callable[[], bytes],
        clock: Clock,
        ttl_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self._pepper = pepper
        self._clock = clock
        self._ttl = min(ttl_seconds, 60.0)
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._lock = threading.Lock()

    def cached(self, key_id: str) -> tuple[bool, KeyRecord | None]:
        """(hit, record) from the cache without touching the store."""
        entry = self._cache.get(key_id)
        if entry is None or self._clock.monotonic() - entry[0] > self._ttl:
            return False, None
        return True, entry[1]

    def load(self, key_id: str) -> KeyRecord | None:
        record = self._store.get_key(key_id)
        with self._lock:
            self._cache[key_id] = (self._clock.monotonic(), record)
        return record

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)

    def authenticate(self, authorization: str | None) -> Principal:
        key_id, secret = split_bearer(authorization)
        hit, record = self.cached(key_id)
        if not hit:
            record = self.load(key_id)
        return self.verify(record, secret)

    def verify(self, record: KeyRecord | None, secret: str) -> Principal:
        if record is None or not secret_matches(self._pepper(), secret, record.secret_hmac):
            raise Unauthenticated("Incorrect API key provided.", code="invalid_api_key")
        return self.active(record)

    def active(self, record: KeyRecord) -> Principal:
        """The key's principal if it is neither revoked nor expired (its secret aside)."""
        now = self._clock.now()
        if record.revoked_at is not None and record.revoked_at <= now:
            raise Unauthenticated(
                f"The API key {record.key_id} has been revoked. Use another key.",
                code="revoked_api_key",
            )
        if record.expires_at is not None and record.expires_at <= now:
            raise Unauthenticated(
                f"The API key {record.key_id} expired. Rotate it or create a new key.",
                code="expired_api_key",
            )
        return Principal(key_id=record.key_id, org_id=record.org_id, scopes=record.scopes)


def split_bearer(authorization: str | None) -> tuple[str, str]:
    """(key_id, secret) from an Authorization header value, or Unauthenticated."""
    if not authorization:
        raise Unauthenticated(
            "You didn't provide an API key. " + _MALFORMED, code="missing_api_key"
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(_MALFORMED, code="invalid_authorization_header")
    parts = parse_api_key(token.strip())
    if parts is None:
        raise Unauthenticated("Incorrect API key provided. " + _MALFORMED, code="invalid_api_key")
    return parts


def require_scope(principal: Principal, scope: str) -> None:
    if not principal.can(scope):
        raise PermissionDenied(
            f"This key lacks the '{scope}' scope required by this route.",
            code="insufficient_scope",
            details={"required_scope": scope},
        )
