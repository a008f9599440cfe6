"""Key management: create, list, retrieve, update, revoke and rotate the caller's
organization's API keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from gantry.domain.key_management import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Actor,
    KeyChanges,
    KeyManager,
)
from gantry.domain.orgs import Limits
from gantry.http.body import JSONBodyRoute
from gantry.http.deps import CurrentRuntime, KeysReader, KeysWriter
from gantry.http.responses import json_response
from gantry.http.schemas.keys import (
    ApiKey,
    ApiKeyList,
    CreatedApiKey,
    DeletedApiKey,
    KeyCreateRequest,
    KeyRotateRequest,
    KeyUpdateRequest,
    api_key_object,
    issued_key_object,
)
from gantry.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["keys"], route_class=JSONBodyRoute)

# Plain `def` routes: the key store is blocking I/O, so FastAPI runs them on a worker thread.


def _manager(rt: Runtime) -> KeyManager:
    return KeyManager(rt.key_store, rt.pepper, rt.clock)


def _limits(raw: dict[str, Any] | None) -> Limits | None:
    return None if raw is None else Limits.from_dict(raw)


@router.post(
    "/keys", response_model=CreatedApiKey, operation_id="keys-create", summary="Create an API key"
)
def create_key(body: KeyCreateRequest, principal: KeysWriter, rt: CurrentRuntime) -> Response:
    issued = _manager(rt).create(
        Actor.of(principal),
        name=body.name,
        scopes=body.scopes,
        expires_at=body.expires_at,
        limits=_limits(body.limits),
        org_id=body.org_id,
        metadata=body.metadata,
    )
    return json_response(issued_key_object(issued, rt.clock.now()))


@router.get("/keys", response_model=ApiKeyList, operation_id="keys-list", summary="List API keys")
def list_keys(
    principal: KeysReader,
    rt: CurrentRuntime,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    after: Annotated[str | None, Query(max_length=64, description="A key id")] = None,
) -> Response:
    page = _manager(rt).list_keys(Actor.of(principal), limit=limit, after=after)
    now = rt.clock.now()
    data = [api_key_object(record, now) for record in page.keys]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )


@router.get(
    "/keys/{key_id}",
    response_model=ApiKey,
    operation_id="keys-retrieve",
    summary="Retrieve an API key",
)
def retrieve_key(key_id: str, principal: KeysReader, rt: CurrentRuntime) -> Response:
    record = _manager(rt).get(Actor.of(principal), key_id)
    return json_response(api_key_object(record, rt.clock.now()))


@router.patch(
    "/keys/{key_id}",
    response_model=ApiKey,
    operation_id="keys-update",
    summary="Update an API key's name, scopes, limits, expiry or metadata",
)
def update_key(
    key_id: str, body: KeyUpdateRequest, principal: KeysWriter, rt: CurrentRuntime
) -> Response:
    changes = KeyChanges(
        given=frozenset(body.model_fields_set),
        name=body.name,
        scopes=tuple(body.scopes) if body.scopes is not None else None,
        limits=_limits(body.limits),
        expires_at=body.expires_at,
        metadata=body.metadata,
    )
    record = _manager(rt).update(Actor.of(principal), key_id, changes)
    rt.authenticator.forget(key_id)
    return json_response(api_key_object(record, rt.clock.now()))


@router.delete(
    "/keys/{key_id}",
    response_model=DeletedApiKey,
    operation_id="keys-delete",
    summary="Revoke an API key (at once)",
)
def delete_key(key_id: str, principal: KeysWriter, rt: CurrentRuntime) -> Response:
    record = _manager(rt).revoke(Actor.of(principal), key_id)
    rt.authenticator.forget(key_id)
    return json_response(
        {
            "id": record.key_id,
            "object": "api_key",
            "deleted": True,
            "revoked_at": int(record.revoked_at or 0),
        }
    )


@router.post(
    "/keys/{key_id}/rotate",
    response_model=CreatedApiKey,
    operation_id="keys-rotate",
    summary="Rotate an API key: a new key now, the old one valid for a grace period",
    description="Send `{}` for the default grace period of 24 hours. The old key can no "
    "longer be rotated; its `expires_at` becomes the end of the grace period.",
)
def rotate_key(
    key_id: str, body: KeyRotateRequest, principal: KeysWriter, rt: CurrentRuntime
) -> Response:
    issued = _manager(rt).rotate(Actor.of(principal), key_id, body.grace_seconds)
    rt.authenticator.forget(key_id)
    return json_response(issued_key_object(issued, rt.clock.now()))
