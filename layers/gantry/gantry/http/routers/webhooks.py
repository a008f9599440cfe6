"""Webhook endpoints: register (the signing secret is returned once), list, delete, send a
test event, and read the delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from gantry.domain.keys import Principal
from gantry.http.body import JSONBodyRoute
from gantry.http.deps import CurrentRuntime, Scope
from gantry.http.responses import json_response
from gantry.http.schemas.jobs import (
    Deleted,
    DeliveryList,
    WebhookEndpointList,
    WebhookEndpointModel,
    WebhookRequest,
    WebhookTest,
)

WebhooksKey = Annotated[Principal, Depends(Scope("webhooks:write"))]

router = APIRouter(prefix="/v1", tags=["webhooks"], route_class=JSONBodyRoute)


@router.post(
    "/webhooks",
    response_model=WebhookEndpointModel,
    operation_id="webhooks-create",
    summary="Register a webhook endpoint",
)
def create_webhook(body: WebhookRequest, principal: WebhooksKey, rt: CurrentRuntime) -> Response:
    endpoint, secret = rt.jobs.webhooks.create(
        principal.org_id, body.url, body.event_types, body.description or "", body.metadata
    )
    return json_response({**endpoint.as_dict(), "secret": secret})


@router.get(
    "/webhooks",
    response_model=WebhookEndpointList,
    operation_id="webhooks-list",
    summary="List webhook endpoints",
)
def list_webhooks(principal: WebhooksKey, rt: CurrentRuntime) -> Response:
    endpoints = rt.jobs.webhooks.list_endpoints(principal.org_id)
    return json_response({"object": "list", "data": [e.as_dict() for e in endpoints]})


@router.delete(
    "/webhooks/{webhook_id}",
    response_model=Deleted,
    operation_id="webhooks-delete",
    summary="Delete a webhook endpoint",
)
def delete_webhook(webhook_id: str, principal: WebhooksKey, rt: CurrentRuntime) -> Response:
    deleted = rt.jobs.webhooks.delete(principal.org_id, webhook_id)
    return json_response({"id": deleted.id, "object": "webhook_endpoint", "deleted": True})


@router.post(
    "/webhooks/{webhook_id}/test",
    response_model=WebhookTest,
    operation_id="webhooks-test",
    summary="Send a webhook.test event to this endpoint",
)
def test_webhook(webhook_id: str, principal: WebhooksKey, rt: CurrentRuntime) -> Response:
    event_id = rt.jobs.webhooks.test(principal.org_id, webhook_id)
    return json_response({"object": "webhook_test", "event_id": event_id, "status": "queued"})


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryList,
    operation_id="webhooks-deliveries",
    summary="The endpoint's delivery log (newest first)",
)
def list_deliveries(
    webhook_id: str,
    principal: WebhooksKey,
    rt: CurrentRuntime,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    deliveries = rt.jobs.webhooks.deliveries(principal.org_id, webhook_id, limit)
    return json_response({"object": "list", "data": [d.as_dict() for d in deliveries]})
