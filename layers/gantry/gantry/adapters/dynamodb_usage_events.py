"""The quota events the usage layer records (`usage` table, `pk=EVENT#<org_id>`, `status`
`pending`), read by the webhook relay and marked `queued` once handed to the queue."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from gantry.adapters.dynamodb_job_items import conditional, number, query_pages, s

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def event_id(sort_key: str) -> str:
    return "evt_quota_" + hashlib.sha256(sort_key.encode()).hexdigest()[:24]


class DynamoPendingEvents:
    def __init__(self, client: DynamoDBClient, usage_table: str) -> None:
        self._client = client
        self._table = usage_table
        self._keys: dict[str, str] = {}  # event id -> sort key, for mark_queued

    def pending(self, org_id: str) -> list[tuple[str, str, dict[str, Any], float]]:
        items = query_pages(
            self._client,
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            FilterExpression="#status = :pending",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":pk": s(f"EVENT#{org_id}"), ":pending": s("pending")},
        )
        found = []
        for item in items:
            sort_key = item["sk"]["S"]
            identifier = event_id(sort_key)
            self._keys[identifier] = sort_key
            payload = json.loads(item.get("payload", {}).get("S") or "{}")
            found.append(
                (identifier, item["type"]["S"], payload, number(item, "created_at") or 0.0)
            )
        return found

    def mark_queued(self, org_id: str, event_id: str) -> bool:
        sort_key = self._keys.pop(event_id, None)
        if sort_key is None:
            return False
        return conditional(
            self._client.update_item,
            TableName=self._table,
            Key={"pk": s(f"EVENT#{org_id}"), "sk": s(sort_key)},
            UpdateExpression="SET #status = :queued",
            ConditionExpression="#status = :pending",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":queued": s("queued"), ":pending": s("pending")},
        )
