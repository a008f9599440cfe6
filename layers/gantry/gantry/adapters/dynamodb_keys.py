"""API keys in DynamoDB (`keys` table): item `pk=KEY#<key_id>`, `sk=META`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gantry.domain.keys import KeyRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def _key(key_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"KEY#{key_id}"}, "sk": {"S": "META"}}


def _num(item: dict[str, Any], name: str) -> float | None:
    value = item.get(name)
    return float(value["N"]) if value and "N" in value else None


def to_item(record: KeyRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        **_key(record.key_id),
        "key_id": {"S": record.key_id},
        "org_id": {"S": record.org_id},
        "secret_hmac": {"S": record.secret_hmac},
        "scopes": {"L": [{"S": s} for s in sorted(record.scopes)]},
        "name": {"S": record.name},
        "created_at": {"N": repr(record.created_at)},
        "created_by": {"S": record.created_by},
    }
    for name in ("expires_at", "revoked_at", "last_used_at"):
        value = getattr(record, name)
        if value is not None:
            item[name] = {"N": repr(value)}
    if record.metadata:
        item["metadata"] = {"M": {k: {"S": v} for k, v in record.metadata.items()}}
    return item


def from_item(item: dict[str, Any]) -> KeyRecord:
    return KeyRecord(
        key_id=item["key_id"]["S"],
        org_id=item["org_id"]["S"],
        secret_hmac=item["secret_hmac"]["S"],
        scopes=frozenset(s["S"] for s in item["scopes"]["L"]),
        name=item.get("name", {}).get("S", ""),
        created_at=_num(item, "created_at") or 0.0,
        created_by=item.get("created_by", {}).get("S", ""),
        expires_at=_num(item, "expires_at"),
        revoked_at=_num(item, "revoked_at"),
        last_used_at=_num(item, "last_used_at"),
        metadata={k: v["S"] for k, v in item.get("metadata", {}).get("M", {}).items()},
    )


class DynamoKeyStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def get_key(self, key_id: str) -> KeyRecord | None:
        response = self._client.get_item(
            TableName=self._table, Key=_key(key_id), ConsistentRead=True
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def put_key(self, record: KeyRecord) -> None:
        self._client.put_item(TableName=self._table, Item=to_item(record))
