"""Every route declares a scope, and a key without it is refused with 403 naming it."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from gantry.http.app import api_routes
from gantry.http.deps import Scope, scope_of
from gantry.http.routers.ops import PUBLIC_PATHS
from tests.conftest import Keys, assert_error


def declared_scopes(route: APIRoute) -> list[str]:
    found = []
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if isinstance(dependency.call, Scope):
            found.append(dependency.call.scope)
        stack.extend(dependency.dependencies)
    scope = scope_of(route.dependant)
    assert (scope.scope if scope else None) == (found[0] if found else None)
    return found


def test_every_route_declares_exactly_one_scope() -> None:
    routes = api_routes()
    assert len(routes) >= 9
    for route in routes:
        scopes = declared_scopes(route)
        if route.path in PUBLIC_PATHS:
            assert scopes == [], route.path
        else:
            assert len(scopes) == 1, f"{route.path} declares {scopes}"


def test_a_key_without_the_scope_gets_403(app_client: TestClient, keys: Keys) -> None:
    key = keys.create(scopes=("usage:read",))
    headers = {"Authorization": f"Bearer {key}"}
    for route in api_routes():
        if route.path in PUBLIC_PATHS:
            continue
        (scope,) = declared_scopes(route)
        if scope == "usage:read":
            continue  # the one scope this key has (GET /v1/usage)
        path = re.sub(r"\{[^}]+\}", "some-id", route.path)
        for method in route.methods:
            response = app_client.request(method, path, headers=headers, json={})
            error = assert_error(response, 403, "insufficient_scope", None)
            assert error["details"] == {"required_scope": scope}


def test_authentication_comes_before_body_parsing(app_client: TestClient) -> None:
    response = app_client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 401, "missing_api_key", None)
