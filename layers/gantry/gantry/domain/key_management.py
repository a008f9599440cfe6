"""Managing API keys inside an organization.

A caller manages the keys of its own organization only; another organization's key is
reported exactly like an unknown one. A key never receives a scope its creator lacks, nor
limits above its organization's, and a caller may change, revoke or rotate only keys whose
scopes it holds itself (otherwise rotating an admin key would hand out an admin secret).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from gantry.domain.caching import SEMANTIC_KEY_METADATA, parse_semantic
from gantry.domain.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from gantry.domain.keys import (
    KeyRecord,
    Principal,
    has_scope,
    hash_secret,
    new_api_key,
    validate_scopes,
)
from gantry.domain.metadata import validate_metadata
from gantry.domain.orgs import Limits, Organization
from gantry.ports import Clock, KeyStore

DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 30 * 86_400
MAX_LIFETIME_SECONDS = 100 * 366 * 86_400
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
LAST_USED_INTERVAL_SECONDS = 60.0

KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9]{4,40}$")


@dataclass(frozen=True)
class Actor:
    """Who manages keys: the organization acted in, the scopes that may be handed out, and
    the name recorded as `created_by`."""

    org_id: str
    scopes: frozenset[str]
    name: str

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.org_id, principal.scopes, f"key:{principal.key_id}")

    @classmethod
    def operator(cls, org_id: str, name: str) -> Actor:
        """An operator working on the table directly: every scope, in one organization."""
        return cls(org_id, frozenset({"admin:full"}), name)


@dataclass(frozen=True)
class IssuedKey:
    """A new key: its record and the full key, which is shown once and never stored."""

    record: KeyRecord
    api_key: str


@dataclass(frozen=True)
class KeyPage:
    keys: tuple[KeyRecord, ...]
    has_more: bool


@dataclass(frozen=True)
class KeyChanges:
    """A partial update: only the fields named in `given` change. A given None clears
    `limits` or `expires_at`; `name` and `scopes` cannot be cleared."""

    given: frozenset[str]
    name: str | None = None
    scopes: tuple[str, ...] | None = None
    limits: Limits | None = None
    expires_at: float | None = None
    metadata: dict[str, str] | None = None  # replaced whole; None clears it


def key_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A key's metadata, checked: OpenAI's limits, and settings Gantry reads from it
    (`semantic_cache`: the key's semantic-cache threshold) must parse."""
    checked = validate_metadata(metadata)
    if SEMANTIC_KEY_METADATA in checked:
        parse_semantic(checked[SEMANTIC_KEY_METADATA], f"metadata.{SEMANTIC_KEY_METADATA}")
    return checked


def key_status(record: KeyRecord, now: float) -> str:
    """One of revoked, expired, rotating (replaced, valid until its grace period ends) or
    active."""
    if record.revoked_at is not None and record.revoked_at <= now:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    if record.rotated_to is not None:
        return "rotating"
    return "active"


def _not_found(key_id: str) -> NotFound:
    return NotFound(f"No API key with id '{key_id}'.", code="not_found")


def _not_active(record: KeyRecord, status: str, action: str) -> Conflict:
    reason = f"was rotated to {record.rotated_to}" if status == "rotating" else f"is {status}"
    return Conflict(
        f"The API key {record.key_id} {reason}, so it cannot be {action}.",
        code="key_not_active",
        details={"status": status},
    )


class KeyManager:
    def __init__(self, store: KeyStore, pepper: Callable[[], bytes], clock: Clock) -> None:
        self._store = store
        self._pepper = pepper
        self._clock = clock

    def create(
        self,
        actor: Actor,
        *,
        name: str,
        scopes: Iterable[str],
        expires_at: float | None = None,
        limits: Limits | None = None,
        org_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> IssuedKey:
        if org_id is not None and org_id != actor.org_id:
            raise NotFound(f"No organization '{org_id}'.", code="not_found", param="org_id")
        granted = self._grantable(actor, scopes)
        now = self._clock.now()
        self._check_expiry(expires_at, now)
        self._check_limits(actor.org_id, limits)
        full_key, key_id, secret = new_api_key()
        record = KeyRecord(
            key_id=key_id,
            org_id=actor.org_id,
            secret_hmac=hash_secret(self._pepper(), secret),
            scopes=granted,
            name=name,
            created_at=now,
            created_by=actor.name,
            expires_at=expires_at,
            limits=limits,
            metadata=key_metadata(metadata),
        )
        self._store.create_key(record)
        return IssuedKey(record, full_key)

    def list_keys(
        self, actor: Actor, *, limit: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> KeyPage:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidRequest(
                f"'limit' must be between 1 and {MAX_PAGE_SIZE}, got {limit}.",
                code="invalid_value",
                param="limit",
            )
        if after is not None and not KEY_ID_PATTERN.match(after):
            raise InvalidRequest(
                "'after' must be the id of a key from a previous page.",
                code="invalid_value",
                param="after",
            )
        records, has_more = self._store.list_keys(actor.org_id, limit, after)
        return KeyPage(tuple(records), has_more)

    def get(self, actor: Actor, key_id: str) -> KeyRecord:
        record = self._store.get_key(key_id) if KEY_ID_PATTERN.match(key_id) else None
        if record is None or record.org_id != actor.org_id:
            raise _not_found(key_id)
        return record

    def update(self, actor: Actor, key_id: str, changes: KeyChanges) -> KeyRecord:
        record = self._manageable(actor, key_id)
        now = self._clock.now()
        status = key_status(record, now)
        if status in ("revoked", "expired"):
            raise _not_active(record, status, "changed")
        updated = record
        if "name" in changes.given:
            if changes.name is None:
                raise InvalidRequest("'name' cannot be null.", code="invalid_type", param="name")
            updated = replace(updated, name=changes.name)
        if "scopes" in changes.given:
            if changes.scopes is None:
                raise InvalidRequest(
                    "'scopes' cannot be null.", code="invalid_type", param="scopes"
                )
            updated = replace(updated, scopes=self._grantable(actor, changes.scopes))
        if "limits" in changes.given:
            self._check_limits(record.org_id, changes.limits)
            updated = replace(updated, limits=changes.limits)
        if "expires_at" in changes.given:
            self._check_expiry(changes.expires_at, now)
            updated = replace(updated, expires_at=changes.expires_at)
        if "metadata" in changes.given:
            updated = replace(updated, metadata=key_metadata(changes.metadata))
        if updated == record:
            return record
        if not self._store.update_key(updated, now):
            raise Conflict(
                f"The API key {key_id} was rotated or revoked while it was being changed. "
                "Read it again before changing it.",
                code="key_not_active",
            )
        return updated

    def revoke(self, actor: Actor, key_id: str) -> KeyRecord:
        """Revoke at once; revoking a revoked key again reports the first revocation."""
        record = self._manageable(actor, key_id)
        if record.revoked_at is not None:
            return record
        now = self._clock.now()
        if self._store.revoke_key(key_id, now):
            return replace(record, revoked_at=now)
        return self.get(actor, key_id)

    def rotate(
        self, actor: Actor, key_id: str, grace_seconds: int = DEFAULT_GRACE_SECONDS
    ) -> IssuedKey:
        """A new key with the old one's name, scopes and limits. The old key stays valid for
        `grace_seconds` (never beyond its own expiry) and can no longer be rotated."""
        if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
            raise InvalidRequest(
                f"'grace_seconds' must be between 0 and {MAX_GRACE_SECONDS}, got {grace_seconds}.",
                code="invalid_value",
                param="grace_seconds",
            )
        old = self._manageable(actor, key_id)
        now = self._clock.now()
        status = key_status(old, now)
        if status != "active":
            raise _not_active(old, status, "rotated")
        full_key, new_id, secret = new_api_key()
        new = KeyRecord(
            key_id=new_id,
            org_id=old.org_id,
            secret_hmac=hash_secret(self._pepper(), secret),
            scopes=old.scopes,
            name=old.name,
            created_at=now,
            created_by=actor.name,
            limits=old.limits,
            metadata=old.metadata,
            rotated_from=old.key_id,
        )
        grace_ends = now + grace_seconds
        old_expires_at = grace_ends if old.expires_at is None else min(old.expires_at, grace_ends)
        if not self._store.rotate_key(new, old_expires_at, now):
            raise Conflict(
                f"The API key {key_id} was rotated or revoked at the same time; "
                "list the organization's keys to find its successor.",
                code="key_not_active",
            )
        return IssuedKey(new, full_key)

    def _manageable(self, actor: Actor, key_id: str) -> KeyRecord:
        record = self.get(actor, key_id)
        missing = sorted(s for s in record.scopes if not has_scope(actor.scopes, s))
        if missing:
            raise PermissionDenied(
                f"The API key {key_id} holds the '{missing[0]}' scope, which the calling key "
                "lacks; only a key holding all of its scopes may change, revoke or rotate it.",
                code="insufficient_scope",
                details={"required_scope": missing[0]},
            )
        return record

    def _grantable(self, actor: Actor, scopes: Iterable[str]) -> frozenset[str]:
        requested = validate_scopes(frozenset(scopes))
        if not requested:
            raise InvalidRequest(
                "'scopes' must name at least one scope.", code="invalid_value", param="scopes"
            )
        for scope in sorted(requested):
            if not has_scope(actor.scopes, scope):
                raise PermissionDenied(
                    f"The calling key lacks the '{scope}' scope, so it cannot grant it.",
                    code="insufficient_scope",
                    param="scopes",
                    details={"required_scope": scope},
                )
        return requested

    def _check_expiry(self, expires_at: float | None, now: float) -> None:
        if expires_at is None:
            return
        if expires_at <= now:
            raise InvalidRequest(
                f"'expires_at' must be in the future (unix seconds; it is now {int(now)}).",
                code="invalid_value",
                param="expires_at",
            )
        if expires_at > now + MAX_LIFETIME_SECONDS:
            raise InvalidRequest(
                "'expires_at' must be within 100 years; omit it for a key that never expires.",
                code="invalid_value",
                param="expires_at",
            )

    def _check_limits(self, org_id: str, limits: Limits | None) -> None:
        if limits is None:
            return
        org = self._store.get_org(org_id) or Organization(org_id)
        ceiling = org.effective_limits()
        wider = [d for d in ceiling.widened_by(limits) if getattr(limits, d) is not None]
        if wider:
            dimension = wider[0]
            raise InvalidRequest(
                f"'limits.{dimension}' is {getattr(limits, dimension)}, above the "
                f"organization's {getattr(ceiling, dimension)}: a key may only narrow its "
                "organization's limits.",
                code="invalid_value",
                param=f"limits.{dimension}",
            )


class LastUseTracker:
    """When a key's `last_used_at` is worth writing: at most once a minute per key in this
    process (the store's conditional write keeps it to once a minute across processes)."""

    _MAX_REMEMBERED = 10_000

    def __init__(
        self, store: KeyStore, clock: Clock, interval: float = LAST_USED_INTERVAL_SECONDS
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, record: KeyRecord) -> float | None:
        """The time to record as this use if a write is due (and remember it), else None."""
        now = self._clock.now()
        with self._lock:
            last = max(record.last_used_at or 0.0, self._written.get(record.key_id, 0.0))
            if now - last < self._interval:
                return None
            if len(self._written) >= self._MAX_REMEMBERED:
                cutoff = now - self._interval
                self._written = {k: t for k, t in self._written.items() if t >= cutoff}
            self._written[record.key_id] = now
            return now

    def record(self, key_id: str, at: float) -> bool:
        """Write the use; False when another process wrote one within the interval."""
        return self._store.touch_key(key_id, at, at - self._interval)
