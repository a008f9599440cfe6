"""Webhook endpoints and their delivery log in the `jobs` table.

- endpoint: `pk=HOOK#<endpoint_id>`, `sk=META`, listed by owner; no secret is stored (it is
  derived from the server pepper and the endpoint's `secret_salt`);
- subscription marker: `pk=SUB#<event type>`, `sk=ORG#<org_id>#HOOK#<endpoint_id>` for event
  types that are relayed from elsewhere (quota crossings), so the relay knows whom to ask;
- delivery: `pk=HOOK#<endpoint_id>`, `sk=DELIVERY#<ISO time>#<event_id>` (TTL 30 days).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gantry.adapters.dynamodb_job_items import (
    META,
    call,
    conditional,
    listed,
    n,
    number,
    owned_items,
    owner,
    query_pages,
    s,
    text,
)
from gantry.domain.webhook_service import QUOTA_EVENT
from gantry.domain.webhooks import Delivery, WebhookEndpoint

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

KIND = "hook"
DELIVERY_TTL_SECONDS = 30 * 86_400
RELAYED_EVENTS = (QUOTA_EVENT,)


def _key(endpoint_id: str) -> dict[str, Any]:
    return {"pk": s(f"HOOK#{endpoint_id}"), "sk": s(META)}


def _delivery_key(endpoint_id: str, key: str) -> dict[str, Any]:
    return {"pk": s(f"HOOK#{endpoint_id}"), "sk": s(f"DELIVERY#{key}")}


def _subscription_key(event_type: str, endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "pk": s(f"SUB#{event_type}"),
        "sk": s(f"ORG#{endpoint.org_id}#HOOK#{endpoint.id}"),
    }


def endpoint_item(endpoint: WebhookEndpoint) -> dict[str, Any]:
    item: dict[str, Any] = {
        **_key(endpoint.id),
        "owner": s(owner(endpoint.org_id, KIND)),
        "listed": s(listed(endpoint.created_at, endpoint.id)),
        "id": s(endpoint.id),
        "org_id": s(endpoint.org_id),
        "url": s(endpoint.url),
        "event_types": {"L": [s(t) for t in endpoint.event_types]},
        "created_at": n(endpoint.created_at),
        "secret_salt": s(endpoint.secret_salt),
        "description": s(endpoint.description),
    }
    if endpoint.metadata:
        item["metadata"] = {"M": {k: s(v) for k, v in endpoint.metadata.items()}}
    return item


def endpoint_from_item(item: dict[str, Any]) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=item["id"]["S"],
        org_id=item["org_id"]["S"],
        url=item["url"]["S"],
        event_types=tuple(t["S"] for t in item["event_types"]["L"]),
        created_at=number(item, "created_at") or 0.0,
        secret_salt=item["secret_salt"]["S"],
        description=text(item, "description") or "",
        metadata={k: v["S"] for k, v in item.get("metadata", {}).get("M", {}).items()},
    )


def delivery_item(delivery: Delivery) -> dict[str, Any]:
    item: dict[str, Any] = {
        **_delivery_key(delivery.endpoint_id, delivery.key),
        "key": s(delivery.key),
        "endpoint_id": s(delivery.endpoint_id),
        "event_id": s(delivery.event_id),
        "event_type": s(delivery.event_type),
        "payload": s(delivery.payload),
        "created_at": n(delivery.created_at),
        "status": s(delivery.status),
        "attempts": n(delivery.attempts),
        "expires_at": n(int(delivery.created_at) + DELIVERY_TTL_SECONDS),
    }
    for name in ("last_attempt_at", "last_status_code", "next_attempt_at"):
        value = getattr(delivery, name)
        if value is not None:
            item[name] = n(value)
    if delivery.last_error is not None:
        item["last_error"] = s(delivery.last_error)
    return item


def delivery_from_item(item: dict[str, Any]) -> Delivery:
    code = number(item, "last_status_code")
    return Delivery(
        endpoint_id=item["endpoint_id"]["S"],
        key=item["key"]["S"],
        event_id=item["event_id"]["S"],
        event_type=item["event_type"]["S"],
        payload=item["payload"]["S"],
        created_at=number(item, "created_at") or 0.0,
        status=item["status"]["S"],
        attempts=int(number(item, "attempts") or 0),
        last_attempt_at=number(item, "last_attempt_at"),
        last_status_code=int(code) if code is not None else None,
        last_error=text(item, "last_error"),
        next_attempt_at=number(item, "next_attempt_at"),
    )


class DynamoWebhookStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def put_endpoint(self, endpoint: WebhookEndpoint) -> None:
        call(self._client.put_item, TableName=self._table, Item=endpoint_item(endpoint))
        for event_type in RELAYED_EVENTS:
            if event_type in endpoint.event_types:
                item = {**_subscription_key(event_type, endpoint), "org_id": s(endpoint.org_id)}
                call(self._client.put_item, TableName=self._table, Item=item)

    def get_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        response = call(
            self._client.get_item,
            TableName=self._table,
            Key=_key(endpoint_id),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return endpoint_from_item(item) if item else None

    def list_endpoints(self, org_id: str) -> list[WebhookEndpoint]:
        items = owned_items(self._client, self._table, owner(org_id, KIND), newest_first=False)
        return [endpoint_from_item(i) for i in items]

    def delete_endpoint(self, endpoint_id: str) -> bool:
        response = call(
            self._client.delete_item,
            TableName=self._table,
            Key=_key(endpoint_id),
            ReturnValues="ALL_OLD",
        )
        old = response.get("Attributes")
        if not old:
            return False
        endpoint = endpoint_from_item(old)
        for event_type in RELAYED_EVENTS:
            if event_type in endpoint.event_types:
                call(
                    self._client.delete_item,
                    TableName=self._table,
                    Key=_subscription_key(event_type, endpoint),
                )
        return True

    def subscribed_orgs(self, event_type: str) -> list[str]:
        items = query_pages(
            self._client,
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": s(f"SUB#{event_type}")},
        )
        return list(dict.fromkeys(item["org_id"]["S"] for item in items))

    def create_delivery(self, delivery: Delivery) -> bool:
        return conditional(
            self._client.put_item,
            TableName=self._table,
            Item=delivery_item(delivery),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get_delivery(self, endpoint_id: str, key: str) -> Delivery | None:
        response = call(
            self._client.get_item,
            TableName=self._table,
            Key=_delivery_key(endpoint_id, key),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return delivery_from_item(item) if item else None

    def update_delivery(self, delivery: Delivery) -> None:
        call(self._client.put_item, TableName=self._table, Item=delivery_item(delivery))

    def list_deliveries(self, endpoint_id: str, limit: int) -> list[Delivery]:
        response = call(
            self._client.query,
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :deliveries)",
            ExpressionAttributeValues={
                ":pk": s(f"HOOK#{endpoint_id}"),
                ":deliveries": s("DELIVERY#"),
            },
            ScanIndexForward=False,
            Limit=limit,
        )
        return [delivery_from_item(i) for i in response.get("Items", [])]
