"""API keys and organizations in DynamoDB (`keys` table): keys are `pk=KEY#<key_id>`,
organizations `pk=ORG#<org_id>`, both with `sk=META` and an `org_id` that the `by_org` index
(sorted by `pk`) lists them by."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from gantry.domain.errors import Conflict, ServiceUnavailable
from gantry.domain.keys import KeyRecord
from gantry.domain.orgs import Limits, Organization

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import PutTypeDef, UpdateTypeDef


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


T = TypeVar("T")

_CONDITION_FAILED = "ConditionalCheckFailedException"
# Neither revoked nor expired at :now.
_LIVE = (
    "attribute_not_exists(revoked_at) AND (attribute_not_exists(expires_at) OR expires_at > :now)"
)


def _unavailable(exc: Exception) -> ServiceUnavailable:
    error = ServiceUnavailable(
        "The key store is unavailable; retry shortly.",
        details={"subsystem": "database"},
        retry_after=1,
    )
    error.__cause__ = exc
    return error


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _rotation_lost(exc: ClientError) -> bool:
    """A cancelled rotation lost to a condition or to a concurrent transaction."""
    if _error_code(exc) != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    codes = {str(reason.get("Code")) for reason in reasons}
    return not codes or bool(codes & {"ConditionalCheckFailed", "TransactionConflict"})


class DynamoKeyStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _call(self, operation: Callable[..., T], **kwargs: Any) -> T:
        try:
            return operation(TableName=self._table, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

    def _conditional(self, operation: Callable[..., Any], **kwargs: Any) -> bool:
        """True if the write happened, False if its condition failed."""
        try:
            operation(TableName=self._table, **kwargs)
        except ClientError as exc:
            if _error_code(exc) == _CONDITION_FAILED:
                return False
            raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
        return True

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        response = self._call(self._client.get_item, Key=key, ConsistentRead=True)
        return response.get("Item")

    def get_key(self, key_id: str) -> KeyRecord | None:
        item = self._get(_key(key_id))
        return from_item(item) if item else None

    def put_key(self, record: KeyRecord) -> None:
        self._client.put_item(TableName=self._table, Item=to_item(record))

    def create_key(self, record: KeyRecord) -> None:
        created = self._conditional(
            self._client.put_item,
            Item=to_item(record),
            ConditionExpression="attribute_not_exists(pk)",
        )
        if not created:
            raise Conflict(f"A key with id {record.key_id} exists; retry.", code="conflict")

    def list_keys(self, org_id: str, limit: int, after: str | None) -> tuple[list[KeyRecord], bool]:
        # Organization items share the index partition but sort after every KEY# item.
        query: dict[str, Any] = {
            "IndexName": "by_org",
            "KeyConditionExpression": "org_id = :org AND pk > :start",
            "ExpressionAttributeValues": {
                ":org": {"S": org_id},
                ":start": {"S": f"KEY#{after or ''}"},
            },
            "Limit": limit + 1,
        }
        records: list[KeyRecord] = []
        while True:
            response = self._call(self._client.query, **query)
            for item in response.get("Items", []):
                if not item["pk"]["S"].startswith("KEY#"):
                    return records, False
                records.append(from_item(item))
                if len(records) > limit:
                    return records[:limit], True
            if "LastEvaluatedKey" not in response:
                return records, False
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def update_key(self, record: KeyRecord, now: float) -> bool:
        names = {
            "#name": "name",
            "#scopes": "scopes",
            "#limits": "limits",
            "#expires": "expires_at",
            "#org": "org_id",
            "#metadata": "metadata",
        }
        values: dict[str, Any] = {
            ":name": {"S": record.name},
            ":scopes": {"L": [{"S": s} for s in sorted(record.scopes)]},
            ":org": {"S": record.org_id},
            ":now": {"N": repr(now)},
        }
        sets, removes = ["#name = :name", "#scopes = :scopes"], []
        if record.limits is None:
            removes.append("#limits")
        else:
            sets.append("#limits = :limits")
            values[":limits"] = limits_to_attr(record.limits)
        if record.expires_at is None:
            removes.append("#expires")
        else:
            sets.append("#expires = :expires")
            values[":expires"] = {"N": repr(record.expires_at)}
        if record.metadata:
            sets.append("#metadata = :metadata")
            values[":metadata"] = {"M": {k: {"S": v} for k, v in record.metadata.items()}}
        else:
            removes.append("#metadata")
        rotation = "attribute_not_exists(rotated_to)"
        if record.rotated_to is not None:
            rotation = "rotated_to = :rotated_to"
            values[":rotated_to"] = {"S": record.rotated_to}
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        return self._conditional(
            self._client.update_item,
            Key=_key(record.key_id),
            UpdateExpression=expression,
            ConditionExpression=f"attribute_exists(pk) AND #org = :org AND {_LIVE} AND {rotation}",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def revoke_key(self, key_id: str, at: float) -> bool:
        return self._conditional(
            self._client.update_item,
            Key=_key(key_id),
            UpdateExpression="SET revoked_at = :at",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(revoked_at)",
            ExpressionAttributeValues={":at": {"N": repr(at)}},
        )

    def rotate_key(self, new: KeyRecord, old_expires_at: float, now: float) -> bool:
        if new.rotated_from is None:
            raise ValueError("a rotated key names the key it replaces")
        old: UpdateTypeDef = {
            "TableName": self._table,
            "Key": _key(new.rotated_from),
            "UpdateExpression": "SET rotated_to = :new, expires_at = :expires",
            "ConditionExpression": (
                f"attribute_exists(pk) AND org_id = :org AND attribute_not_exists(rotated_to) "
                f"AND {_LIVE}"
            ),
            "ExpressionAttributeValues": {
                ":new": {"S": new.key_id},
                ":expires": {"N": repr(old_expires_at)},
                ":org": {"S": new.org_id},
                ":now": {"N": repr(now)},
            },
        }
        fresh: PutTypeDef = {
            "TableName": self._table,
            "Item": to_item(new),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        try:
            self._client.transact_write_items(TransactItems=[{"Update": old}, {"Put": fresh}])
        except ClientError as exc:
            if _rotation_lost(exc):
                return False
            raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
        return True

    def touch_key(self, key_id: str, at: float, cutoff: float) -> bool:
        return self._conditional(
            self._client.update_item,
            Key=_key(key_id),
            UpdateExpression="SET last_used_at = :at",
            ConditionExpression=(
                "attribute_exists(pk) AND "
                "(attribute_not_exists(last_used_at) OR last_used_at < :cutoff)"
            ),
            ExpressionAttributeValues={":at": {"N": repr(at)}, ":cutoff": {"N": repr(cutoff)}},
        )

    def get_org(self, org_id: str) -> Organization | None:
        item = self._get(_org_key(org_id))
        return org_from_item(item) if item else None

    def put_org(self, org: Organization) -> None:
        self._client.put_item(TableName=self._table, Item=org_to_item(org))

    def create_org(self, org: Organization) -> bool:
        return self._conditional(
            self._client.put_item,
            Item=org_to_item(org),
            ConditionExpression="attribute_not_exists(pk)",
        )
