"""Key management rules, against an in-memory key store."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gantry.domain.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from gantry.domain.key_management import (
    MAX_GRACE_SECONDS,
    Actor,
    KeyChanges,
    KeyManager,
    LastUseTracker,
    key_status,
)
from gantry.domain.keys import KeyRecord, parse_api_key, secret_matches
from gantry.domain.org_management import OrganizationManager
from gantry.domain.orgs import Limits, Organization

PEPPER = b"unit-test-pepper"
ORG = "org-unit"
ADMIN = Actor(ORG, frozenset({"admin:full"}), "key:admin")


class Clock:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.wall


class MemoryStore:
    """The KeyStore port in memory, with the conditions DynamoKeyStore applies."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.orgs: dict[str, Organization] = {}
        self.touches: list[tuple[str, float]] = []

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self.keys.get(key_id)

    def put_key(self, record: KeyRecord) -> None:
        self.keys[record.key_id] = record

    def create_key(self, record: KeyRecord) -> None:
        assert record.key_id not in self.keys
        self.keys[record.key_id] = record

    def list_keys(self, org_id: str, limit: int, after: str | None) -> tuple[list[KeyRecord], bool]:
        ids = sorted(k for k, r in self.keys.items() if r.org_id == org_id and k > (after or ""))
        return [self.keys[k] for k in ids[:limit]], len(ids) > limit

    def _live(self, record: KeyRecord, now: float) -> bool:
        return record.revoked_at is None and (record.expires_at is None or record.expires_at > now)

    def update_key(self, record: KeyRecord, now: float) -> bool:
        stored = self.keys.get(record.key_id)
        if stored is None or not self._live(stored, now) or stored.rotated_to != record.rotated_to:
            return False
        self.keys[record.key_id] = replace(
            stored,
            name=record.name,
            scopes=record.scopes,
            limits=record.limits,
            expires_at=record.expires_at,
        )
        return True

    def revoke_key(self, key_id: str, at: float) -> bool:
        stored = self.keys.get(key_id)
        if stored is None or stored.revoked_at is not None:
            return False
        self.keys[key_id] = replace(stored, revoked_at=at)
        return True

    def rotate_key(self, new: KeyRecord, old_expires_at: float, now: float) -> bool:
        assert new.rotated_from is not None
        old = self.keys.get(new.rotated_from)
        if old is None or not self._live(old, now) or old.rotated_to is not None:
            return False
        self.keys[old.key_id] = replace(old, rotated_to=new.key_id, expires_at=old_expires_at)
        self.keys[new.key_id] = new
        return True

    def touch_key(self, key_id: str, at: float, cutoff: float) -> bool:
        stored = self.keys[key_id]
        if stored.last_used_at is not None and stored.last_used_at >= cutoff:
            return False
        self.keys[key_id] = replace(stored, last_used_at=at)
        self.touches.append((key_id, at))
        return True

    def get_org(self, org_id: str) -> Organization | None:
        return self.orgs.get(org_id)

    def put_org(self, org: Organization) -> None:
        self.orgs[org.org_id] = org

    def create_org(self, org: Organization) -> bool:
        if org.org_id in self.orgs:
            return False
        self.orgs[org.org_id] = org
        return True


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(store: MemoryStore, clock: Clock) -> KeyManager:
    return KeyManager(store, lambda: PEPPER, clock)


def test_a_created_key_verifies_and_only_its_hmac_is_stored(
    manager: KeyManager, store: MemoryStore, clock: Clock
) -> None:
    issued = manager.create(ADMIN, name="ci", scopes=["models:read", "models:read"])
    parts = parse_api_key(issued.api_key)
    assert parts is not None
    key_id, secret = parts
    stored = store.keys[key_id]
    assert stored == issued.record
    assert secret_matches(PEPPER, secret, stored.secret_hmac)
    assert secret not in repr(stored)
    assert stored.scopes == frozenset({"models:read"})
    assert stored.created_by == "key:admin"
    assert stored.created_at == clock.now()
    assert stored.org_id == ORG


@pytest.mark.parametrize(
    ("granted", "requested", "refused"),
    [
        ({"keys:write"}, ["completions:write"], "completions:write"),
        ({"keys:write", "models:read"}, ["admin:full"], "admin:full"),
        ({"keys:read", "keys:write"}, ["keys:read", "usage:read"], "usage:read"),
    ],
)
def test_a_key_never_gets_a_scope_its_creator_lacks(
    manager: KeyManager, granted: set[str], requested: list[str], refused: str
) -> None:
    actor = Actor(ORG, frozenset(granted), "key:k")
    with pytest.raises(PermissionDenied) as caught:
        manager.create(actor, name="x", scopes=requested)
    assert caught.value.code == "insufficient_scope"
    assert caught.value.param == "scopes"
    assert caught.value.details == {"required_scope": refused}


def test_write_implies_read_when_granting(manager: KeyManager) -> None:
    actor = Actor(ORG, frozenset({"keys:write", "files:write"}), "key:k")
    issued = manager.create(actor, name="x", scopes=["keys:read", "files:read", "files:write"])
    assert issued.record.scopes == {"keys:read", "files:read", "files:write"}


@pytest.mark.parametrize(("scopes", "code"), [(["nope:read"], "invalid_scope"), ([], None)])
def test_unknown_or_no_scopes_are_400(manager: KeyManager, scopes: list[str], code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        manager.create(ADMIN, name="x", scopes=scopes)
    assert caught.value.param == "scopes"
    assert caught.value.code == (code or "invalid_value")


def test_another_organization_is_not_found(manager: KeyManager) -> None:
    with pytest.raises(NotFound) as caught:
        manager.create(ADMIN, name="x", scopes=["models:read"], org_id="org-elsewhere")
    assert caught.value.param == "org_id"
    other = manager.create(replace(ADMIN, org_id="org-elsewhere"), name="x", scopes=["models:read"])
    for action in (
        lambda: manager.get(ADMIN, other.record.key_id),
        lambda: manager.revoke(ADMIN, other.record.key_id),
        lambda: manager.rotate(ADMIN, other.record.key_id),
        lambda: manager.update(ADMIN, other.record.key_id, KeyChanges(frozenset({"name"}), "n")),
        lambda: manager.get(ADMIN, "not a key id!"),
    ):
        with pytest.raises(NotFound):
            action()


def test_limits_may_only_narrow_the_organizations(manager: KeyManager, store: MemoryStore) -> None:
    store.put_org(Organization(ORG, tier="free", limits=Limits(tokens_per_day=1_000)))
    narrow = Limits(requests_per_minute=60, tokens_per_day=1_000)
    assert manager.create(ADMIN, name="x", scopes=["models:read"], limits=narrow).record.limits
    for wide, dimension in (
        (Limits(requests_per_minute=61), "requests_per_minute"),
        (Limits(tokens_per_day=1_001), "tokens_per_day"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            manager.create(ADMIN, name="x", scopes=["models:read"], limits=wide)
        assert caught.value.param == f"limits.{dimension}"


def test_limits_of_a_custom_tier_are_unbounded(manager: KeyManager, store: MemoryStore) -> None:
    store.put_org(Organization(ORG, tier="custom"))
    limits = Limits(requests_per_minute=10**9)
    assert manager.create(ADMIN, name="x", scopes=["models:read"], limits=limits)


def test_an_organization_without_a_record_has_the_standard_tier(manager: KeyManager) -> None:
    with pytest.raises(InvalidRequest) as caught:
        manager.create(ADMIN, name="x", scopes=["models:read"], limits=Limits(request_burst=101))
    assert caught.value.param == "limits.request_burst"


@pytest.mark.parametrize("offset", [0, -1, 200 * 366 * 86_400])
def test_expiry_must_be_in_the_future_and_sane(
    manager: KeyManager, clock: Clock, offset: int
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        manager.create(ADMIN, name="x", scopes=["models:read"], expires_at=clock.now() + offset)
    assert caught.value.param == "expires_at"


def test_status(clock: Clock) -> None:
    now = clock.now()
    record = KeyRecord("abcd", ORG, "hmac", frozenset({"models:read"}))
    assert key_status(record, now) == "active"
    assert key_status(replace(record, rotated_to="efgh", expires_at=now + 1), now) == "rotating"
    assert key_status(replace(record, rotated_to="efgh", expires_at=now), now) == "expired"
    assert key_status(replace(record, revoked_at=now, expires_at=now), now) == "revoked"


def test_rotation_keeps_the_old_key_for_the_grace_period(
    manager: KeyManager, store: MemoryStore, clock: Clock
) -> None:
    limits = Limits(requests_per_minute=5)
    old = manager.create(ADMIN, name="ci", scopes=["models:read"], limits=limits).record
    new = manager.rotate(replace(ADMIN, name="key:other"), old.key_id, grace_seconds=600).record
    assert (new.name, new.scopes, new.limits, new.org_id) == (old.name, old.scopes, limits, ORG)
    assert new.rotated_from == old.key_id
    assert new.created_by == "key:other"
    assert new.expires_at is None
    rotated = store.keys[old.key_id]
    assert rotated.rotated_to == new.key_id
    assert rotated.expires_at == clock.now() + 600
    assert key_status(rotated, clock.now()) == "rotating"
    with pytest.raises(Conflict) as caught:
        manager.rotate(ADMIN, old.key_id)
    assert caught.value.code == "key_not_active"


def test_rotation_never_extends_an_earlier_expiry(manager: KeyManager, clock: Clock) -> None:
    old = manager.create(ADMIN, name="x", scopes=["models:read"], expires_at=clock.now() + 60)
    manager.rotate(ADMIN, old.record.key_id, grace_seconds=86_400)
    assert manager.get(ADMIN, old.record.key_id).expires_at == clock.now() + 60


@pytest.mark.parametrize("grace", [-1, MAX_GRACE_SECONDS + 1])
def test_grace_is_bounded(manager: KeyManager, grace: int) -> None:
    old = manager.create(ADMIN, name="x", scopes=["models:read"])
    with pytest.raises(InvalidRequest) as caught:
        manager.rotate(ADMIN, old.record.key_id, grace_seconds=grace)
    assert caught.value.param == "grace_seconds"


def test_a_rotation_that_loses_the_race_is_a_conflict(
    manager: KeyManager, store: MemoryStore
) -> None:
    old = manager.create(ADMIN, name="x", scopes=["models:read"]).record
    stale = store.keys[old.key_id]
    manager.rotate(ADMIN, old.key_id)
    store.get_key = lambda key_id: stale  # type: ignore[method-assign]
    with pytest.raises(Conflict) as caught:
        manager.rotate(ADMIN, old.key_id)
    assert caught.value.code == "key_not_active"


def test_revoked_and_expired_keys_cannot_change_or_rotate(
    manager: KeyManager, clock: Clock
) -> None:
    revoked = manager.create(ADMIN, name="x", scopes=["models:read"]).record.key_id
    first = manager.revoke(ADMIN, revoked)
    assert first.revoked_at == clock.now()
    clock.wall += 5
    assert manager.revoke(ADMIN, revoked).revoked_at == first.revoked_at  # idempotent
    expired = manager.create(
        ADMIN, name="x", scopes=["models:read"], expires_at=clock.now() + 1
    ).record.key_id
    clock.wall += 2
    for key_id, status in ((revoked, "revoked"), (expired, "expired")):
        with pytest.raises(Conflict) as caught:
            manager.rotate(ADMIN, key_id)
        assert caught.value.details == {"status": status}
        with pytest.raises(Conflict):
            manager.update(ADMIN, key_id, KeyChanges(frozenset({"name"}), name="y"))


def test_update_changes_only_what_is_given(manager: KeyManager, clock: Clock) -> None:
    issued = manager.create(
        ADMIN,
        name="x",
        scopes=["models:read"],
        limits=Limits(requests_per_minute=5),
        expires_at=clock.now() + 60,
    )
    key_id = issued.record.key_id
    renamed = manager.update(ADMIN, key_id, KeyChanges(frozenset({"name"}), name="y"))
    assert renamed == replace(issued.record, name="y")
    cleared = manager.update(ADMIN, key_id, KeyChanges(frozenset({"limits", "expires_at"})))
    assert (cleared.limits, cleared.expires_at) == (None, None)
    assert manager.get(ADMIN, key_id) == cleared
    unchanged = manager.update(ADMIN, key_id, KeyChanges(frozenset()))
    assert unchanged == cleared
    for field in ("name", "scopes"):
        with pytest.raises(InvalidRequest) as caught:
            manager.update(ADMIN, key_id, KeyChanges(frozenset({field})))
        assert caught.value.param == field


def test_a_caller_manages_only_keys_whose_scopes_it_holds(manager: KeyManager) -> None:
    admin_key = manager.create(ADMIN, name="root", scopes=["admin:full"]).record.key_id
    writer = Actor(ORG, frozenset({"keys:write"}), "key:w")
    assert manager.get(writer, admin_key).key_id == admin_key  # reading is fine
    for action in (
        lambda: manager.rotate(writer, admin_key),
        lambda: manager.revoke(writer, admin_key),
        lambda: manager.update(writer, admin_key, KeyChanges(frozenset({"name"}), name="n")),
    ):
        with pytest.raises(PermissionDenied) as caught:
            action()
        assert caught.value.details == {"required_scope": "admin:full"}


def test_listing_pages_through_one_organization(manager: KeyManager) -> None:
    ids = sorted(
        manager.create(ADMIN, name="x", scopes=["models:read"]).record.key_id for _ in "abc"
    )
    manager.create(replace(ADMIN, org_id="org-other"), name="x", scopes=["models:read"])
    first = manager.list_keys(ADMIN, limit=2)
    assert [r.key_id for r in first.keys] == ids[:2] and first.has_more
    rest = manager.list_keys(ADMIN, limit=2, after=ids[1])
    assert [r.key_id for r in rest.keys] == ids[2:] and not rest.has_more
    for kwargs, param in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"after": "!"}, "after"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            manager.list_keys(ADMIN, **kwargs)  # type: ignore[arg-type]
        assert caught.value.param == param


def test_last_use_is_due_once_a_minute_per_key(store: MemoryStore, clock: Clock) -> None:
    tracker = LastUseTracker(store, clock)
    record = KeyRecord("abcd", ORG, "hmac", frozenset({"models:read"}))
    store.put_key(record)
    at = tracker.due(record)
    assert at == clock.now()
    assert tracker.record(record.key_id, at)
    assert tracker.due(record) is None
    clock.wall += 59
    assert tracker.due(record) is None
    clock.wall += 1
    assert tracker.due(record) == clock.now()
    recent = replace(record, last_used_at=clock.now())
    assert LastUseTracker(store, clock).due(recent) is None  # another process, fresh record


def test_the_store_condition_stops_a_second_write_within_the_minute(
    store: MemoryStore, clock: Clock
) -> None:
    store.put_key(KeyRecord("abcd", ORG, "hmac", frozenset({"models:read"})))
    first, second = LastUseTracker(store, clock), LastUseTracker(store, clock)
    assert first.record("abcd", clock.now())
    clock.wall += 30
    assert not second.record("abcd", clock.now())
    assert len(store.touches) == 1


def test_organizations(store: MemoryStore, clock: Clock) -> None:
    orgs = OrganizationManager(store, clock)
    created = orgs.create("acme", name="Acme", tier="free")
    assert created == Organization("acme", "Acme", "free", Limits(), clock.now())
    with pytest.raises(Conflict):
        orgs.create("acme")
    assert orgs.set_tier("acme", "enterprise").tier == "enterprise"
    limited = orgs.set_limits("acme", Limits(tokens_per_day=10))
    assert limited.effective_limits().tokens_per_day == 10
    assert limited.effective_limits().requests_per_minute == 6_000
    assert store.orgs["acme"] == limited
    with pytest.raises(InvalidRequest) as caught:
        orgs.set_tier("acme", "platinum")
    assert caught.value.param == "tier"
    with pytest.raises(NotFound):
        orgs.set_tier("nobody", "free")
    with pytest.raises(InvalidRequest):
        orgs.create("bad id!")
