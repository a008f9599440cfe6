"""Authentication by hashed keys, scopes, and the in-process key cache."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gantry.adapters.aws import client as aws_client
from gantry.runtime import Runtime
from tests.conftest import FakeClock, Keys, assert_error

MODELS = "/v1/models"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Basic dXNlcjpwYXNz", "invalid_authorization_header"),
        ("Bearer", "invalid_authorization_header"),
        ("Bearer not-a-gantry-key", "invalid_api_key"),
        ("Bearer gnt_short_x", "invalid_api_key"),
        ("Bearer gnt_unknownkey1_AAAAAAAAAAAAAAAAAAAAAAAA", "invalid_api_key"),
    ],
)
def test_missing_or_malformed_keys_are_401(
    app_client: TestClient, header: str | None, code: str
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = app_client.get(MODELS, headers=headers)
    assert_error(response, 401, code, None, kind="authentication_error")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_wrong_secret_is_401(app_client: TestClient, admin_key: str) -> None:
    forged = admin_key[:-4] + ("AAAA" if not admin_key.endswith("AAAA") else "BBBB")
    response = app_client.get(MODELS, headers={"Authorization": f"Bearer {forged}"})
    assert_error(response, 401, "invalid_api_key", None)


def test_expired_and_revoked_keys(app_client: TestClient, keys: Keys, clock: FakeClock) -> None:
    expired = keys.create(expires_at=clock.now() - 1)
    revoked = keys.create(revoked_at=clock.now() - 1)
    response = app_client.get(MODELS, headers={"Authorization": f"Bearer {expired}"})
    assert_error(response, 401, "expired_api_key", None)
    response = app_client.get(MODELS, headers={"Authorization": f"Bearer {revoked}"})
    assert_error(response, 401, "revoked_api_key", None)


def test_key_expires_while_cached(app_client: TestClient, keys: Keys, clock: FakeClock) -> None:
    key = keys.create(expires_at=clock.now() + 30)
    headers = {"Authorization": f"Bearer {key}"}
    assert app_client.get(MODELS, headers=headers).status_code == 200
    clock.advance(31)
    assert_error(app_client.get(MODELS, headers=headers), 401, "expired_api_key", None)


def test_missing_scope_is_403_naming_it(app_client: TestClient, keys: Keys) -> None:
    key = keys.create(scopes=("models:read",))
    response = app_client.post(
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "gantry-echo", "messages": [{"role": "user", "content": "hi"}]},
    )
    error = assert_error(response, 403, "insufficient_scope", None, kind="permission_error")
    assert error["details"] == {"required_scope": "completions:write"}
    assert "completions:write" in str(error["message"])


def test_only_the_hmac_is_stored(runtime: Runtime, admin_key: str) -> None:
    key_id, secret = admin_key.split("_", 2)[1:]
    item = aws_client("dynamodb", runtime.settings).get_item(
        TableName=runtime.settings.keys_table,
        Key={"pk": {"S": f"KEY#{key_id}"}, "sk": {"S": "META"}},
    )["Item"]
    assert secret not in str(item)
    assert admin_key not in str(item)
    assert len(item["secret_hmac"]["S"]) == 64


def test_cache_serves_warm_requests_without_dynamodb(
    api: TestClient, runtime: Runtime, clock: FakeClock
) -> None:
    calls: list[str] = []
    dynamodb = aws_client("dynamodb", runtime.settings)

    def count(model: object, **_: object) -> None:
        calls.append(str(model))

    # Reads only: last_used_at is written (at most once a minute) off the request path.
    dynamodb.meta.events.register("before-call.dynamodb.GetItem", count)
    try:
        assert api.get(MODELS).status_code == 200
        assert len(calls) == 1  # the first request loads the key
        for _ in range(5):
            assert api.get(MODELS).status_code == 200
        assert len(calls) == 1  # warm: no database read
        clock.advance(61)
        assert api.get(MODELS).status_code == 200
        assert len(calls) == 2  # TTL passed: loaded again
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.GetItem", count)


def test_revocation_reaches_the_process_within_the_ttl(
    app_client: TestClient, keys: Keys, runtime: Runtime, clock: FakeClock
) -> None:
    key = keys.create()
    key_id = key.split("_")[1]
    headers = {"Authorization": f"Bearer {key}"}
    assert app_client.get(MODELS, headers=headers).status_code == 200
    record = runtime.key_store.get_key(key_id)
    assert record is not None
    from dataclasses import replace

    runtime.key_store.put_key(replace(record, revoked_at=clock.now()))
    clock.advance(1)
    assert app_client.get(MODELS, headers=headers).status_code == 200  # still cached
    clock.advance(60)
    assert_error(app_client.get(MODELS, headers=headers), 401, "revoked_api_key", None)


def test_health_and_docs_need_no_key(app_client: TestClient) -> None:
    assert app_client.get("/health").json()["status"] == "ok"
    assert app_client.get("/openapi.json").status_code == 200
    assert "swagger" in app_client.get("/docs").text.lower()
    assert "invalid_api_key" in app_client.get("/docs/errors").text


def test_key_store_outage_is_503_not_500(
    app_client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import EndpointConnectionError

    def down(**_: object) -> None:
        raise EndpointConnectionError(endpoint_url="http://dynamodb")

    dynamodb = aws_client("dynamodb", runtime.settings)
    monkeypatch.setattr(dynamodb, "get_item", down)
    key = "gnt_neverseen01_AAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    response = app_client.get(MODELS, headers={"Authorization": f"Bearer {key}"})
    error = assert_error(response, 503, "service_unavailable", None, kind="server_error")
    assert error["details"] == {"subsystem": "database"}
    assert error["retryable"] is True
    assert response.headers["retry-after"] == "1"


def test_organizations_round_trip(runtime: Runtime) -> None:
    from gantry.domain.orgs import Limits, Organization

    org = Organization("org-rt", name="Round Trip", tier="free", limits=Limits(tokens_per_day=9))
    runtime.key_store.put_org(org)
    assert runtime.key_store.get_org("org-rt") == org
    assert org.effective_limits().tokens_per_day == 9
    assert org.effective_limits().requests_per_minute == 60
