"""/v1/keys: create, use, list, retrieve, update, revoke and rotate keys over HTTP."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.adapters.aws import client as aws_client
from gantry.domain.orgs import Limits, Organization
from gantry.http.deps import last_used_writer
from gantry.runtime import Runtime
from tests.conftest import FakeClock, Keys, assert_error

KEYS = "/v1/keys"
MODELS = "/v1/models"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def key_id_of(key: str) -> str:
    return key.split("_")[1]


def create(api: TestClient, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
    payload = {"name": "ci", "scopes": ["models:read"], **body}
    response = api.post(KEYS, json=payload, headers=headers)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def flush_last_used() -> None:
    last_used_writer.submit(lambda: None).result(timeout=10)


@pytest.fixture
def org_admin(keys: Keys) -> tuple[str, dict[str, str]]:
    """An admin key in an organization of its own (the table outlives each test)."""
    org_id = f"org-{secrets.token_hex(6)}"
    return org_id, bearer(keys.create(org_id=org_id))


# --- the lifecycle ----------------------------------------------------------------------


def test_create_then_use_at_once(api: TestClient, admin_key: str, clock: FakeClock) -> None:
    expires_at = int(clock.now()) + 3600
    created = create(
        api,
        name="deploys",
        scopes=["models:read", "keys:read"],
        limits={"requests_per_minute": 10},
        expires_at=expires_at,
    )
    assert created["key"].startswith(f"gnt_{created['id']}_")
    assert created["object"] == "api_key"
    assert created["name"] == "deploys"
    assert created["org_id"] == "org-test"
    assert created["scopes"] == ["keys:read", "models:read"]
    assert created["created_by"] == f"key:{key_id_of(admin_key)}"
    assert created["created_at"] == int(clock.now())
    assert created["expires_at"] == expires_at
    assert created["limits"] == {"requests_per_minute": 10}
    assert created["status"] == "active"
    assert created["last_used_at"] is None
    assert created["revoked_at"] is None
    assert created["rotated_from"] is None and created["rotated_to"] is None
    assert "secret_hmac" not in created

    assert api.get(MODELS, headers=bearer(created["key"])).status_code == 200
    own = api.get(f"{KEYS}/{created['id']}", headers=bearer(created["key"]))
    assert own.status_code == 200
    assert "key" not in own.json()
    assert {k: v for k, v in own.json().items() if k != "last_used_at"} == {
        k: v for k, v in created.items() if k not in ("key", "last_used_at")
    }


def test_list_pages_through_the_organization(
    app_client: TestClient, org_admin: tuple[str, dict[str, str]], keys: Keys
) -> None:
    org_id, headers = org_admin
    created = [create(app_client, headers, name=f"k{i}")["id"] for i in range(2)]
    keys.create(org_id="org-other-list")
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"after": after} if after else {})
        page = app_client.get(KEYS, params=params, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        pages += 1
        assert body["object"] == "list"
        assert len(body["data"]) <= 1
        for item in body["data"]:
            assert item["org_id"] == org_id
            assert "key" not in item and "secret_hmac" not in item
            seen.append(item["id"])
        if not body["has_more"]:
            break
        assert body["first_id"] == body["last_id"] == body["data"][0]["id"]
        after = body["last_id"]
    assert pages == 3
    assert seen == sorted(seen)
    assert set(seen) == {*created, key_id_of(headers["Authorization"].split()[1])}

    everything = app_client.get(KEYS, headers=headers).json()
    assert [item["id"] for item in everything["data"]] == seen
    assert everything["first_id"] == seen[0] and everything["last_id"] == seen[-1]
    assert everything["has_more"] is False
    past_the_end = app_client.get(KEYS, params={"after": seen[-1]}, headers=headers).json()
    assert past_the_end == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_patch_then_revoke_take_effect_at_once(api: TestClient, clock: FakeClock) -> None:
    created = create(api, scopes=["models:read", "keys:read"])
    key, key_id = created["key"], created["id"]
    assert api.get(KEYS, headers=bearer(key)).status_code == 200  # cached from here on

    patched = api.patch(f"{KEYS}/{key_id}", json={"name": "renamed", "scopes": ["models:read"]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "renamed"
    assert patched.json()["scopes"] == ["models:read"]
    error = assert_error(api.get(KEYS, headers=bearer(key)), 403, "insufficient_scope", None)
    assert error["details"] == {"required_scope": "keys:read"}
    assert api.get(MODELS, headers=bearer(key)).status_code == 200

    deleted = api.delete(f"{KEYS}/{key_id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {
        "id": key_id,
        "object": "api_key",
        "deleted": True,
        "revoked_at": int(clock.now()),
    }
    assert_error(api.get(MODELS, headers=bearer(key)), 401, "revoked_api_key", None)
    assert api.get(f"{KEYS}/{key_id}").json()["status"] == "revoked"

    clock.advance(5)
    again = api.delete(f"{KEYS}/{key_id}")
    assert again.json() == deleted.json()  # revoking twice reports the first revocation
    response = api.patch(f"{KEYS}/{key_id}", json={"name": "back"})
    assert_error(response, 409, "key_not_active", None)
    response = api.post(f"{KEYS}/{key_id}/rotate", json={})
    assert_error(response, 409, "key_not_active", None)


def test_patch_limits_and_expiry_and_clear_them(api: TestClient, clock: FakeClock) -> None:
    key_id = create(api)["id"]
    expires_at = int(clock.now()) + 60
    body = {"limits": {"tokens_per_day": 100}, "expires_at": expires_at}
    patched = api.patch(f"{KEYS}/{key_id}", json=body).json()
    assert patched["limits"] == {"tokens_per_day": 100}
    assert patched["expires_at"] == expires_at
    cleared = api.patch(f"{KEYS}/{key_id}", json={"limits": None, "expires_at": None}).json()
    assert cleared["limits"] is None and cleared["expires_at"] is None
    assert cleared["name"] == "ci"


def test_rotation_keeps_both_keys_during_the_grace_period(
    api: TestClient, clock: FakeClock
) -> None:
    old = create(api, name="rotating", limits={"requests_per_minute": 7})
    assert api.get(MODELS, headers=bearer(old["key"])).status_code == 200

    response = api.post(f"{KEYS}/{old['id']}/rotate", json={"grace_seconds": 3600})
    assert response.status_code == 200, response.text
    new = response.json()
    assert new["key"].startswith(f"gnt_{new['id']}_")
    assert new["rotated_from"] == old["id"]
    assert (new["name"], new["scopes"], new["limits"]) == (
        old["name"],
        old["scopes"],
        old["limits"],
    )
    assert new["status"] == "active"

    for key in (old["key"], new["key"]):
        assert api.get(MODELS, headers=bearer(key)).status_code == 200
    replaced = api.get(f"{KEYS}/{old['id']}").json()
    assert replaced["status"] == "rotating"
    assert replaced["rotated_to"] == new["id"]
    assert replaced["expires_at"] == int(clock.now() + 3600)

    again = api.post(f"{KEYS}/{old['id']}/rotate", json={})
    assert_error(again, 409, "key_not_active", None)

    clock.advance(3601)
    assert_error(api.get(MODELS, headers=bearer(old["key"])), 401, "expired_api_key", None)
    assert api.get(MODELS, headers=bearer(new["key"])).status_code == 200
    assert api.get(f"{KEYS}/{old['id']}").json()["status"] == "expired"


def test_rotation_without_grace_ends_the_old_key_at_once(api: TestClient) -> None:
    old = create(api)
    assert api.get(MODELS, headers=bearer(old["key"])).status_code == 200
    new = api.post(f"{KEYS}/{old['id']}/rotate", json={"grace_seconds": 0}).json()
    assert_error(api.get(MODELS, headers=bearer(old["key"])), 401, "expired_api_key", None)
    assert api.get(MODELS, headers=bearer(new["key"])).status_code == 200


def test_the_loser_of_a_rotation_race_gets_409(
    app_client: TestClient,
    runtime: Runtime,
    org_admin: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two rotations (or a rotation and a change) that both read the key before either
    wrote: the conditional write lets only the first one through."""
    _, headers = org_admin
    old_id = create(app_client, headers)["id"]
    stale = runtime.key_store.get_key(old_id)
    fresh = runtime.key_store.get_key

    winner = app_client.post(f"{KEYS}/{old_id}/rotate", json={}, headers=headers)
    assert winner.status_code == 200, winner.text
    monkeypatch.setattr(
        runtime.key_store, "get_key", lambda key_id: stale if key_id == old_id else fresh(key_id)
    )
    loser = app_client.post(f"{KEYS}/{old_id}/rotate", json={}, headers=headers)
    assert_error(loser, 409, "key_not_active", None)
    change = app_client.patch(f"{KEYS}/{old_id}", json={"name": "late"}, headers=headers)
    assert_error(change, 409, "key_not_active", None)
    monkeypatch.undo()

    listed = app_client.get(KEYS, headers=headers).json()["data"]
    assert [k["id"] for k in listed if k["rotated_from"] == old_id] == [winner.json()["id"]]
    old = app_client.get(f"{KEYS}/{old_id}", headers=headers).json()
    assert (old["rotated_to"], old["name"]) == (winner.json()["id"], "ci")


# --- who may do what ----------------------------------------------------------------------


def test_scopes_beyond_the_creators_are_403(app_client: TestClient, keys: Keys) -> None:
    writer = bearer(keys.create(scopes=("keys:write", "models:read")))
    for scopes, missing in (
        (["completions:write"], "completions:write"),
        (["admin:full"], "admin:full"),
    ):
        response = app_client.post(KEYS, json={"name": "x", "scopes": scopes}, headers=writer)
        error = assert_error(response, 403, "insufficient_scope", "scopes")
        assert error["details"] == {"required_scope": missing}
        assert missing in str(error["message"])
    created = create(app_client, writer, scopes=["models:read", "keys:read"])
    assert created["scopes"] == ["keys:read", "models:read"]


def test_a_read_only_key_cannot_write(app_client: TestClient, keys: Keys) -> None:
    reader = bearer(keys.create(scopes=("keys:read",)))
    assert app_client.get(KEYS, headers=reader).status_code == 200
    response = app_client.post(KEYS, json={"name": "x", "scopes": ["keys:read"]}, headers=reader)
    error = assert_error(response, 403, "insufficient_scope", None)
    assert error["details"] == {"required_scope": "keys:write"}
    key_id = key_id_of(reader["Authorization"])
    for method, path in (
        ("PATCH", f"{KEYS}/{key_id}"),
        ("DELETE", f"{KEYS}/{key_id}"),
        ("POST", f"{KEYS}/{key_id}/rotate"),
    ):
        response = app_client.request(method, path, json={}, headers=reader)
        assert_error(response, 403, "insufficient_scope", None)


def test_a_key_cannot_manage_a_more_powerful_key(api: TestClient, keys: Keys) -> None:
    admin_id = create(api, scopes=["admin:full"])["id"]
    writer = bearer(keys.create(scopes=("keys:write",)))
    assert api.get(f"{KEYS}/{admin_id}", headers=writer).status_code == 200
    for method, path, body in (
        ("PATCH", f"{KEYS}/{admin_id}", {"name": "mine now"}),
        ("DELETE", f"{KEYS}/{admin_id}", None),
        ("POST", f"{KEYS}/{admin_id}/rotate", {}),
    ):
        response = api.request(method, path, json=body, headers=writer)
        error = assert_error(response, 403, "insufficient_scope", None)
        assert error["details"] == {"required_scope": "admin:full"}
    assert api.get(f"{KEYS}/{admin_id}").json()["status"] == "active"


def test_another_organizations_key_is_not_found(api: TestClient, keys: Keys) -> None:
    other = keys.create(org_id="org-other")
    other_id = key_id_of(other)
    for key_id in (other_id, "unknownkey01", "x"):
        for method, path, body in (
            ("GET", f"{KEYS}/{key_id}", None),
            ("PATCH", f"{KEYS}/{key_id}", {"name": "stolen"}),
            ("DELETE", f"{KEYS}/{key_id}", None),
            ("POST", f"{KEYS}/{key_id}/rotate", {}),
        ):
            response = api.request(method, path, json=body)
            error = assert_error(response, 404, "not_found", None)
            assert other not in response.text
            assert str(error["message"]) == f"No API key with id '{key_id}'."
    assert api.get(MODELS, headers=bearer(other)).status_code == 200  # untouched
    response = api.post(KEYS, json={"name": "x", "scopes": ["models:read"], "org_id": "org-other"})
    assert_error(response, 404, "not_found", "org_id")
    assert create(api, org_id="org-test")["org_id"] == "org-test"


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"scopes": ["models:read"]}, "missing_required_parameter", "name"),
        ({"name": "x"}, "missing_required_parameter", "scopes"),
        ({"name": "x", "scopes": "models:read"}, "invalid_type", "scopes"),
        ({"name": "x", "scopes": ["models:read", "everything"]}, "invalid_scope", "scopes"),
        ({"name": "x", "scopes": []}, "invalid_value", "scopes"),
        ({"name": "", "scopes": ["models:read"]}, "invalid_value", "name"),
        ({"name": "x", "scopes": ["models:read"], "admin": True}, "unknown_parameter", "admin"),
        (
            {"name": "x", "scopes": ["models:read"], "limits": {"requests_per_minute": -1}},
            "invalid_value",
            "limits.requests_per_minute",
        ),
        (
            {"name": "x", "scopes": ["models:read"], "limits": {"tokens_per_day": 10**13}},
            "invalid_value",
            "limits.tokens_per_day",
        ),
        (
            {"name": "x", "scopes": ["models:read"], "limits": {"concurrent_requests": 1.5}},
            "invalid_type",
            "limits.concurrent_requests",
        ),
        (
            {"name": "x", "scopes": ["models:read"], "limits": {"bananas": 1}},
            "invalid_value",
            "limits.bananas",
        ),
        (
            {"name": "x", "scopes": ["models:read"], "limits": {"requests_per_minute": 601}},
            "invalid_value",
            "limits.requests_per_minute",
        ),
        ({"name": "x", "scopes": ["models:read"], "limits": []}, "invalid_type", "limits"),
        ({"name": "x", "scopes": ["models:read"], "expires_at": 1}, "invalid_value", "expires_at"),
        (
            {"name": "x", "scopes": ["models:read"], "expires_at": 10**15},
            "invalid_value",
            "expires_at",
        ),
        (
            {"name": "x", "scopes": ["models:read"], "expires_at": "tomorrow"},
            "invalid_type",
            "expires_at",
        ),
    ],
)
def test_bad_create_bodies_are_400(
    api: TestClient, body: dict[str, Any], code: str, param: str
) -> None:
    assert_error(api.post(KEYS, json=body), 400, code, param)


def test_malformed_bodies(api: TestClient) -> None:
    headers = {"content-type": "application/json"}
    assert_error(api.post(KEYS, content=b"{nope", headers=headers), 400, "invalid_json", None)
    assert_error(api.post(KEYS, content=b"[]", headers=headers), 400, "invalid_json", None)
    response = api.post(KEYS, content=b"name=x", headers={"content-type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type", None)


def test_limits_may_only_narrow_the_organizations(
    app_client: TestClient, runtime: Runtime, org_admin: tuple[str, dict[str, str]]
) -> None:
    org_id, headers = org_admin
    runtime.key_store.put_org(
        Organization(org_id, tier="free", limits=Limits(tokens_per_day=1_000))
    )
    for limits, param in (
        ({"requests_per_minute": 61}, "limits.requests_per_minute"),
        ({"tokens_per_day": 1_001}, "limits.tokens_per_day"),
        ({"monthly_budget_usd": 5.01}, "limits.monthly_budget_usd"),
    ):
        response = app_client.post(
            KEYS, json={"name": "x", "scopes": ["models:read"], "limits": limits}, headers=headers
        )
        error = assert_error(response, 400, "invalid_value", param)
        assert "narrow" in str(error["message"])
    narrow = {"requests_per_minute": 60, "tokens_per_day": 1_000, "monthly_budget_usd": 2.5}
    assert create(app_client, headers, limits=narrow)["limits"] == narrow
    key_id = create(app_client, headers)["id"]
    response = app_client.patch(
        f"{KEYS}/{key_id}", json={"limits": {"concurrent_requests": 5}}, headers=headers
    )
    assert_error(response, 400, "invalid_value", "limits.concurrent_requests")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"name": None}, "invalid_type", "name"),
        ({"scopes": None}, "invalid_type", "scopes"),
        ({"scopes": ["nope:read"]}, "invalid_scope", "scopes"),
        ({"scopes": ["admin:full", "models:read"]}, None, None),
        ({"expires_at": 5}, "invalid_value", "expires_at"),
        ({"limits": {"tokens_per_minute": -5}}, "invalid_value", "limits.tokens_per_minute"),
        ({"revoked_at": None}, "unknown_parameter", "revoked_at"),
        ({"org_id": "org-other"}, "unknown_parameter", "org_id"),
    ],
)
def test_bad_patch_bodies_are_400(
    api: TestClient, body: dict[str, Any], code: str | None, param: str | None
) -> None:
    key_id = create(api)["id"]
    response = api.patch(f"{KEYS}/{key_id}", json=body)
    if code is None:  # the admin may grant admin:full
        assert response.status_code == 200, response.text
    else:
        assert_error(response, 400, code, param)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"grace_seconds": -1}, "invalid_value"),
        ({"grace_seconds": 2_592_001}, "invalid_value"),
        ({"grace_seconds": "60"}, "invalid_type"),
        ({"grace_seconds": 1.5}, "invalid_type"),
    ],
)
def test_grace_seconds_out_of_range_is_400(
    api: TestClient, body: dict[str, Any], code: str
) -> None:
    key_id = create(api)["id"]
    assert_error(api.post(f"{KEYS}/{key_id}/rotate", json=body), 400, code, "grace_seconds")
    assert api.get(f"{KEYS}/{key_id}").json()["status"] == "active"


def test_the_longest_grace_is_thirty_days(api: TestClient, clock: FakeClock) -> None:
    key_id = create(api)["id"]
    response = api.post(f"{KEYS}/{key_id}/rotate", json={"grace_seconds": 2_592_000})
    assert response.status_code == 200, response.text
    assert api.get(f"{KEYS}/{key_id}").json()["expires_at"] == int(clock.now() + 2_592_000)


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({"limit": 0}, "invalid_value", "limit"),
        ({"limit": 101}, "invalid_value", "limit"),
        ({"limit": "many"}, "invalid_value", "limit"),
        ({"after": "not/a/key"}, "invalid_value", "after"),
    ],
)
def test_bad_list_parameters_are_400(
    api: TestClient, params: dict[str, Any], code: str, param: str
) -> None:
    assert_error(api.get(KEYS, params=params), 400, code, param)


# --- last_used_at -------------------------------------------------------------------------


@pytest.fixture
def update_items(runtime: Runtime) -> Iterator[Callable[[str], int]]:
    """Counts UpdateItem calls per key id."""
    seen: list[str] = []
    dynamodb = aws_client("dynamodb", runtime.settings)

    def count(params: dict[str, Any], **_: object) -> None:
        seen.append(json.loads(params["body"])["Key"]["pk"]["S"])

    dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", count)
    try:
        yield lambda key_id: seen.count(f"KEY#{key_id}")
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.UpdateItem", count)


def test_last_used_at_is_written_once_a_minute(
    app_client: TestClient,
    keys: Keys,
    runtime: Runtime,
    clock: FakeClock,
    update_items: Callable[[str], int],
) -> None:
    key = keys.create(scopes=("models:read", "keys:read"))
    key_id = key_id_of(key)
    for _ in range(5):
        assert app_client.get(MODELS, headers=bearer(key)).status_code == 200
    flush_last_used()
    assert update_items(key_id) == 1
    first_use = int(clock.now())
    shown = app_client.get(f"{KEYS}/{key_id}", headers=bearer(key)).json()
    assert shown["last_used_at"] == first_use

    clock.advance(30)
    for _ in range(5):
        assert app_client.get(MODELS, headers=bearer(key)).status_code == 200
    flush_last_used()
    assert update_items(key_id) == 1

    clock.advance(31)
    for _ in range(5):
        assert app_client.get(MODELS, headers=bearer(key)).status_code == 200
    flush_last_used()
    assert update_items(key_id) == 2
    record = runtime.key_store.get_key(key_id)
    assert record is not None and record.last_used_at == clock.now()


def test_another_process_does_not_write_within_the_minute(
    runtime: Runtime, keys: Keys, clock: FakeClock
) -> None:
    key_id = key_id_of(keys.create())
    assert runtime.key_store.touch_key(key_id, clock.now(), clock.now() - 60)
    assert not runtime.key_store.touch_key(key_id, clock.now() + 59, clock.now() - 1)
    assert runtime.key_store.touch_key(key_id, clock.now() + 61, clock.now() + 1)
    assert not runtime.key_store.touch_key("unknownkey01", clock.now(), clock.now() - 60)
    assert runtime.key_store.get_key("unknownkey01") is None


def test_a_failed_last_used_write_never_fails_the_request(
    app_client: TestClient,
    keys: Keys,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def down(*_: object) -> bool:
        raise RuntimeError("database down")

    monkeypatch.setattr(runtime.key_store, "touch_key", down)
    key = keys.create(scopes=("models:read",))
    with caplog.at_level(logging.WARNING, logger="gantry.http"):
        assert app_client.get(MODELS, headers=bearer(key)).status_code == 200
        flush_last_used()
    assert any("last use" in record.getMessage() for record in caplog.records)
    assert app_client.get(MODELS, headers=bearer(key)).status_code == 200


def test_the_last_used_write_is_off_the_request_path(
    app_client: TestClient, keys: Keys, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = False

    def slow(*_: object) -> bool:
        deadline = time.monotonic() + 5
        while not released and time.monotonic() < deadline:
            time.sleep(0.01)
        return True

    monkeypatch.setattr(runtime.key_store, "touch_key", slow)
    key = keys.create(scopes=("models:read",))
    started = time.monotonic()
    assert app_client.get(MODELS, headers=bearer(key)).status_code == 200
    assert time.monotonic() - started < 2  # the write waits on its own thread
    released = True
    flush_last_used()
