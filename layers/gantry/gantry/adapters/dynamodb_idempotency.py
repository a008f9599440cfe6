"""Idempotency records in DynamoDB (`idempotency` table), in the layout of Powertools'
idempotency utility: `id`, `status` (INPROGRESS | COMPLETED), `validation` (the request's
fingerprint), `expiration` (TTL, epoch seconds), `in_progress_expiration` (epoch ms), and
`data` (the response: JSON, zlib-compressed). Plus `org_id` and `key_id` for operators.

Claiming is one conditional PutItem that succeeds when no live record exists (none, past
its TTL, or an in-progress claim whose lease ran out) and otherwise returns the record.
"""

from __future__ import annotations

import base64
import json
import logging
import zlib
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from gantry.domain.errors import ServiceUnavailable
from gantry.domain.idempotency import TTL_SECONDS, IdempotencyRecord, StoredResponse

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger("gantry.idempotency")

MAX_DATA_BYTES = 380_000


def encode_response(response: StoredResponse) -> bytes:
    body = {
        "status": response.status,
        "headers": [list(h) for h in response.headers],
        "body": base64.b64encode(response.body).decode(),
    }
    return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


def decode_response(data: bytes) -> StoredResponse:
    body = json.loads(zlib.decompress(data))
    return StoredResponse(
        int(body["status"]),
        tuple((str(k), str(v)) for k, v in body["headers"]),
        base64.b64decode(body["body"]),
    )


def _record(item: dict[str, Any]) -> IdempotencyRecord:
    data = item.get("data")
    response = decode_response(bytes(data["B"])) if data else None
    fingerprint = item.get("validation", {}).get("S", "")
    if item.get("status", {}).get("S") == "COMPLETED":
        return IdempotencyRecord(fingerprint, "COMPLETED", response)
    return IdempotencyRecord(fingerprint, "INPROGRESS", None)


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The idempotency store is unavailable, so this request cannot be run exactly once; "
        "retry shortly with the same Idempotency-Key.",
        details={"subsystem": "database"},
        retry_after=1,
    )


class DynamoIdempotency:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def begin(
        self,
        record: str,
        fingerprint: str,
        *,
        now: float,
        lease_seconds: int,
        org_id: str,
        key_id: str,
    ) -> IdempotencyRecord | None:
        item = {
            "id": {"S": record},
            "status": {"S": "INPROGRESS"},
            "validation": {"S": fingerprint},
            "expiration": {"N": str(int(now) + TTL_SECONDS)},
            "in_progress_expiration": {"N": str(int((now + lease_seconds) * 1000))},
            "org_id": {"S": org_id},
            "key_id": {"S": key_id},
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression=(
                    "attribute_not_exists(id) OR expiration <= :now OR "
                    "(#status = :progress AND in_progress_expiration <= :now_ms)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":now": {"N": str(int(now))},
                    ":now_ms": {"N": str(int(now * 1000))},
                    ":progress": {"S": "INPROGRESS"},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") != "ConditionalCheckFailedException":
                raise _unavailable() from exc
            old: Any = exc.response.get("Item")
        except BotoCoreError as exc:
            raise _unavailable() from exc
        if not old:
            old = self._read(record)
        return _record(old) if old else None

    def _read(self, record: str) -> dict[str, Any] | None:
        try:
            found: Any = self._client.get_item(
                TableName=self._table, Key={"id": {"S": record}}, ConsistentRead=True
            ).get("Item")
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable() from exc
        return dict(found) if found else None

    def complete(self, record: str, fingerprint: str, response: StoredResponse, now: float) -> None:
        data = encode_response(response)
        values: dict[str, Any] = {
            ":done": {"S": "COMPLETED"},
            ":fp": {"S": fingerprint},
            ":exp": {"N": str(int(now) + TTL_SECONDS)},
        }
        update = "SET #status = :done, expiration = :exp REMOVE in_progress_expiration"
        if len(data) <= MAX_DATA_BYTES:
            update = "SET #status = :done, expiration = :exp, #data = :data "
            update += "REMOVE in_progress_expiration"
            values[":data"] = {"B": data}
        else:
            logger.warning("idempotent response of %d bytes is too large to keep", len(data))
        self._client.update_item(
            TableName=self._table,
            Key={"id": {"S": record}},
            UpdateExpression=update,
            ConditionExpression="validation = :fp",
            ExpressionAttributeNames={
                "#status": "status",
                **({"#data": "data"} if ":data" in values else {}),
            },
            ExpressionAttributeValues=values,
        )

    def abandon(self, record: str, fingerprint: str) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key={"id": {"S": record}},
                ConditionExpression="validation = :fp AND #status = :progress",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":fp": {"S": fingerprint},
                    ":progress": {"S": "INPROGRESS"},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
