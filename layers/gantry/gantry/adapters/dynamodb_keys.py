"""API keys and organizations in DynamoDB (`keys` table): keys are `pk=KEY#<key_id>`,
organizations `pk=ORG#<org_id>`, both with `sk=META`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from gantry.domain.errors import ServiceUnavailable
from gantry.domain.keys import KeyRecord
from gantry.domain.orgs import Limits, Organization

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
    for name in ("rotated_from", "rotated_to"):
        value = getattr(record, name)
        if value is not None:
            item[name] = {"S": value}
    if record.metadata:
        item["metadata"] = {"M": {k: {"S": v} for k, v in record.metadata.items()}}
    if record.limits is not None:
        item["limits"] = limits_to_attr(record.limits)
    return item


def limits_to_attr(limits: Limits) -> dict[str, Any]:
    return {"M": {k: {"N": repr(v)} for k, v in limits.as_dict().items() if v is not None}}


def limits_from_attr(attr: dict[str, Any] | None) -> Limits | None:
    if attr is None:
        return None
    raw = {k: v["N"] for k, v in attr["M"].items()}
    return Limits.from_dict(
        {k: float(v) if k == "monthly_budget_usd" else int(v) for k, v in raw.items()}
    )


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
        limits=limits_from_attr(item.get("limits")),
        rotated_from=item.get("rotated_from", {}).get("S"),
        rotated_to=item.get("rotated_to", {}).get("S"),
    )


def _org_key(org_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ORG#{org_id}"}, "sk": {"S": "META"}}


def org_to_item(org: Organization) -> dict[str, Any]:
    return {
        **_org_key(org.org_id),
        "org_id": {"S": org.org_id},
        "name": {"S": org.name},
        "tier": {"S": org.tier},
        "limits": limits_to_attr(org.limits),
        "created_at": {"N": repr(org.created_at)},
    }


def org_from_item(item: dict[str, Any]) -> Organization:
    return Organization(
        org_id=item["org_id"]["S"],
        name=item.get("name", {}).get("S", ""),
        tier=item.get("tier", {}).get("S", "standard"),
        limits=limits_from_attr(item.get("limits")) or Limits(),
        created_at=_num(item, "created_at") or 0.0,
    )


class DynamoKeyStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        try:
            response = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(
                "The key store is unavailable; retry shortly.",
                details={"subsystem": "database"},
                retry_after=1,
            ) from exc
        return response.get("Item")

    def get_key(self, key_id: str) -> KeyRecord | None:
        item = self._get(_key(key_id))
        return from_item(item) if item else None

    def put_key(self, record: KeyRecord) -> None:
        self._client.put_item(TableName=self._table, Item=to_item(record))

    def get_org(self, org_id: str) -> Organization | None:
        item = self._get(_org_key(org_id))
        return org_from_item(item) if item else None

    def put_org(self, org: Organization) -> None:
        self._client.put_item(TableName=self._table, Item=org_to_item(org))
