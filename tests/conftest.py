"""Shared fixtures: one moto server per test session, a fresh runtime per test."""

from __future__ import annotations

import os
import time

# jsii prints a multi-line banner on Node versions it no longer supports; it changes nothing.
# Set before anything imports aws_cdk (which starts the jsii runtime).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from gantry.adapters.aws import client as aws_client
from gantry.adapters.aws import reset_clients
from gantry.config import Settings, get_settings
from gantry.domain.keys import KeyRecord, hash_secret, new_api_key
from gantry.http.app import create_app
from gantry.local.moto_env import LocalAws, create_tables, start_moto_server
from gantry.runtime import Runtime, set_runtime

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "GantryTest")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


class FakeClock:
    def __init__(self) -> None:
        self.wall = time.time()
        self.mono = 1000.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    aws = start_moto_server()
    os.environ["GANTRY_AWS_ENDPOINT_URL"] = aws.endpoint_url
    os.environ["GANTRY_ENV"] = "local"
    get_settings.cache_clear()
    reset_clients()
    create_tables(aws_client("dynamodb", get_settings()), get_settings())
    yield aws
    aws.stop()


@pytest.fixture
def settings(local_aws: LocalAws) -> Settings:
    return get_settings()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def runtime(settings: Settings, clock: FakeClock) -> Iterator[Runtime]:
    rt = Runtime(settings, clock=clock)
    set_runtime(rt)
    yield rt
    set_runtime(None)


@dataclass
class Keys:
    runtime: Runtime

    def create(
        self,
        scopes: tuple[str, ...] = ("admin:full",),
        org_id: str = "org-test",
        expires_at: float | None = None,
        revoked_at: float | None = None,
    ) -> str:
        full, key_id, secret = new_api_key()
        self.runtime.key_store.put_key(
            KeyRecord(
                key_id=key_id,
                org_id=org_id,
                secret_hmac=hash_secret(self.runtime.pepper(), secret),
                scopes=frozenset(scopes),
                name="test key",
                created_at=time.time(),
                created_by="tests",
                expires_at=expires_at,
                revoked_at=revoked_at,
            )
        )
        return full


@pytest.fixture
def keys(runtime: Runtime) -> Keys:
    return Keys(runtime)


@pytest.fixture
def admin_key(keys: Keys) -> str:
    return keys.create()


@pytest.fixture
def app_client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def api(app_client: TestClient, admin_key: str) -> TestClient:
    """A client that sends the admin key on every request."""
    app_client.headers["Authorization"] = f"Bearer {admin_key}"
    return app_client


ErrorCheck = Callable[..., dict[str, object]]


_KIND_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    500: "server_error",
    503: "server_error",
}


def assert_error(
    response: object, status: int, code: str, param: str | None = None, kind: str | None = None
) -> dict[str, object]:
    """Assert the response is the error envelope with this status, code and param."""
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    error = body["error"]
    assert set(error) == {
        "message",
        "type",
        "param",
        "code",
        "request_id",
        "retryable",
        "doc_url",
        "details",
    }
    assert error["code"] == code, error
    assert error["param"] == param, error
    expected_kind = kind or _KIND_BY_STATUS.get(status)
    if expected_kind is not None:
        assert error["type"] == expected_kind, error
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]  # type: ignore[attr-defined]
    return error  # type: ignore[no-any-return]
