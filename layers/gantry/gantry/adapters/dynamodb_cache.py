"""The response cache in DynamoDB (`cache` table, TTL attribute `expires_at`):

- an answer: `pk=<org_id>#<request hash>`, `v` (the encoded outcome, binary), `created_at`;
- a semantic index: `pk=SEM#<org_id>#<context hash>`, one map attribute per slot
  (`s00`..`s63`: `v` the prompt's embedding as float16, `e` the answer's key, `t` when).

DynamoDB deletes expired items lazily, so reads check `expires_at` themselves.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from gantry.domain.caching import SEMANTIC_SLOTS, SemanticSlot, StoredEntry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# DynamoDB items hold at most 400 KB; leave room for the key and the other attributes.
MAX_PAYLOAD_BYTES = 380_000


def _slot_name(slot: int) -> str:
    return f"s{slot:02d}"


def pack_vector(vector: tuple[float, ...]) -> bytes:
    return struct.pack(f"<{len(vector)}e", *vector)


def unpack_vector(data: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(data) // 2}e", data)


def _expired(item: dict[str, Any], now: float) -> bool:
    expires = item.get("expires_at")
    return expires is not None and float(expires["N"]) <= now


class DynamoCache:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def get(self, key: str, now: float) -> StoredEntry | None:
        item = self._client.get_item(TableName=self._table, Key={"pk": {"S": key}}).get("Item")
        if not item or "v" not in item or _expired(item, now):
            return None
        return StoredEntry(bytes(item["v"]["B"]), float(item["created_at"]["N"]))

    def put(self, key: str, entry: StoredEntry, ttl_seconds: int) -> bool:
        if len(entry.payload) > MAX_PAYLOAD_BYTES:
            return False
        self._client.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": key},
                "v": {"B": entry.payload},
                "created_at": {"N": repr(round(entry.created_at, 3))},
                "expires_at": {"N": str(int(entry.created_at) + ttl_seconds)},
            },
        )
        return True

    def slots(self, key: str, now: float) -> list[SemanticSlot]:
        item = self._client.get_item(TableName=self._table, Key={"pk": {"S": key}}).get("Item")
        if not item or _expired(item, now):
            return []
        found = []
        for slot in range(SEMANTIC_SLOTS):
            value = item.get(_slot_name(slot))
            if value is None:
                continue
            fields = value["M"]
            found.append(
                SemanticSlot(
                    unpack_vector(bytes(fields["v"]["B"])),
                    fields["e"]["S"],
                    float(fields["t"]["N"]),
                )
            )
        return found

    def put_slot(self, key: str, slot: int, entry: SemanticSlot, ttl_seconds: int) -> None:
        self._client.update_item(
            TableName=self._table,
            Key={"pk": {"S": key}},
            UpdateExpression="SET #slot = :slot, expires_at = :expires",
            ExpressionAttributeNames={"#slot": _slot_name(slot)},
            ExpressionAttributeValues={
                ":slot": {
                    "M": {
                        "v": {"B": pack_vector(entry.vector)},
                        "e": {"S": entry.entry},
                        "t": {"N": repr(round(entry.created_at, 3))},
                    }
                },
                ":expires": {"N": str(int(entry.created_at) + ttl_seconds)},
            },
        )
