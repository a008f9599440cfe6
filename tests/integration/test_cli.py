"""`gantry keys ...` and `gantry orgs ...` against the test moto server, in-process."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.local.cli import main
from gantry.runtime import Runtime
from tests.conftest import FakeClock, assert_error

MODELS = "/v1/models"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(list(argv)) == 0, capsys.readouterr().err
    output: dict[str, Any] = json.loads(capsys.readouterr().out)
    return output


def fails(capsys: pytest.CaptureFixture[str], code: int, *argv: str) -> str:
    assert main(list(argv)) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def new_org() -> str:
    return f"org-cli-{secrets.token_hex(5)}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_create_makes_a_usable_key_and_its_organization(
    capsys: pytest.CaptureFixture[str], runtime: Runtime, app_client: TestClient
) -> None:
    org = new_org()
    assert main(["keys", "create", "--org", org, "--scopes", "models:read,keys:read"]) == 0
    captured = capsys.readouterr()
    created = json.loads(captured.out)
    assert f"Created organization {org} (tier standard)" in captured.err
    assert "shown only once" in captured.err
    assert created["key"].startswith(f"gnt_{created['id']}_")
    assert created["org_id"] == org
    assert created["scopes"] == ["keys:read", "models:read"]
    assert created["status"] == "active"

    stored_org = runtime.key_store.get_org(org)
    assert stored_org is not None and stored_org.tier == "standard"
    assert app_client.get(MODELS, headers=bearer(created["key"])).status_code == 200
    listed = app_client.get("/v1/keys", headers=bearer(created["key"])).json()
    assert [item["id"] for item in listed["data"]] == [created["id"]]


def test_orgs_then_keys_within_the_tiers_limits(
    capsys: pytest.CaptureFixture[str], runtime: Runtime
) -> None:
    org = new_org()
    made = run(capsys, "orgs", "create", "--org", org, "--name", "Acme", "--tier", "free")
    assert made["id"] == org and made["tier"] == "free" and made["name"] == "Acme"
    assert made["effective_limits"]["requests_per_minute"] == 60
    assert "already exists" in fails(capsys, 1, "orgs", "create", "--org", org)

    error = fails(
        capsys, 1, "keys", "create", "--org", org, "--limits", '{"requests_per_minute": 61}'
    )
    assert "limits.requests_per_minute" in error
    created = run(capsys, "keys", "create", "--org", org, "--limits", '{"requests_per_minute": 60}')
    assert created["limits"] == {"requests_per_minute": 60}
    assert created["scopes"] == ["admin:full"]

    upgraded = run(capsys, "orgs", "set-tier", "--org", org, "--tier", "enterprise")
    assert upgraded["effective_limits"]["requests_per_minute"] == 6_000
    limited = run(capsys, "orgs", "set-limits", "--org", org, "--limits", '{"tokens_per_day": 9}')
    assert limited["limits"] == {"tokens_per_day": 9}
    assert limited["effective_limits"]["tokens_per_day"] == 9
    stored = runtime.key_store.get_org(org)
    assert stored is not None
    assert (stored.tier, stored.limits.tokens_per_day) == ("enterprise", 9)
    cleared = run(capsys, "orgs", "set-limits", "--org", org, "--limits", "{}")
    assert cleared["limits"] == {}


def test_keys_list_never_shows_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    org = new_org()
    first = run(capsys, "keys", "create", "--org", org, "--name", "one")
    second = run(capsys, "keys", "create", "--org", org, "--name", "two")
    listed = run(capsys, "keys", "list", "--org", org)
    assert {item["id"] for item in listed["data"]} == {first["id"], second["id"]}
    assert listed["has_more"] is False
    text = json.dumps(listed)
    assert first["key"] not in text and second["key"] not in text
    page = run(capsys, "keys", "list", "--org", org, "--limit", "1")
    assert len(page["data"]) == 1 and page["has_more"] is True


def test_keys_rotate_and_revoke_reach_the_api_within_the_cache_ttl(
    capsys: pytest.CaptureFixture[str], app_client: TestClient, clock: FakeClock
) -> None:
    org = new_org()
    old = run(capsys, "keys", "create", "--org", org, "--scopes", "models:read")
    assert app_client.get(MODELS, headers=bearer(old["key"])).status_code == 200

    new = run(capsys, "keys", "rotate", old["id"], "--grace-seconds", "0")
    assert new["rotated_from"] == old["id"]
    assert new["scopes"] == ["models:read"]
    assert app_client.get(MODELS, headers=bearer(new["key"])).status_code == 200

    revoked = run(capsys, "keys", "revoke", new["id"])
    assert revoked["status"] == "revoked"
    assert revoked["revoked_at"] is not None

    clock.advance(61)  # past the other process's key cache
    response = app_client.get(MODELS, headers=bearer(old["key"]))
    assert_error(response, 401, "expired_api_key", None)
    response = app_client.get(MODELS, headers=bearer(new["key"]))
    assert_error(response, 401, "revoked_api_key", None)
    assert "cannot be rotated" in fails(capsys, 1, "keys", "rotate", new["id"])


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (("keys", "revoke", "unknownkey01"), 1, "No API key"),
        (("keys", "rotate", "unknownkey01"), 1, "No API key"),
        (("keys", "create", "--org", "org-cli-x", "--scopes", "everything"), 1, "Unknown scope"),
        (("keys", "create", "--org", "org-cli-x", "--limits", "{oops"), 2, "Expecting"),
        (("keys", "create", "--org", "org-cli-x", "--limits", "[1]"), 2, "JSON object"),
        (("keys", "create", "--org", "bad org!"), 1, "organization id"),
        (("orgs", "set-tier", "--org", "org-cli-nobody", "--tier", "free"), 1, "No organization"),
        (("orgs", "set-limits", "--org", "org-cli-x", "--limits", '{"x": 1}'), 1, "Unknown limit"),
    ],
)
def test_failures_explain_themselves(
    capsys: pytest.CaptureFixture[str],
    runtime: Runtime,
    argv: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    assert message in fails(capsys, code, *argv)


def test_unknown_tiers_are_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str], runtime: Runtime
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["orgs", "create", "--org", new_org(), "--tier", "platinum"])
    assert caught.value.code == 2
    assert "platinum" in capsys.readouterr().err
