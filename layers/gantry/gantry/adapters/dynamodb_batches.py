"""Batches in the `jobs` table.

- batch: `pk=BATCH#<id>`, `sk=META`; the request counts are numbers the chunks ADD to;
  the TTL `expires_at` is the end of retention (the completion window's end is
  `window_ends_at`);
- chunk: `pk=BATCH#<id>`, `sk=CHUNK#<index>`, written in the same transaction that adds the
  chunk's counts, so a chunk that runs twice is counted once.

The workflow writes `failed_at` (an ISO string) and `error_code` when a step fails.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from gantry.adapters.dynamodb_job_items import (
    META,
    StatusRecords,
    call,
    json_attr,
    listed,
    n,
    number,
    owner,
    s,
    text,
    unavailable,
)
from gantry.domain.batches import ENTERED_AT, Batch, LineError, RequestCounts

KIND = "batch"
WORKFLOW_FAILURES = {
    "States.Timeout": "A batch worker stopped responding and the retries ran out.",
}


def batch_key(batch_id: str) -> dict[str, Any]:
    return {"pk": s(f"BATCH#{batch_id}"), "sk": s(META)}


def _attr(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return s(value)
    if isinstance(value, int | float):
        return n(value)
    if isinstance(value, Mapping):
        return {"M": {str(k): s(str(v)) for k, v in value.items()}}
    raise TypeError(f"cannot store {type(value).__name__}")


def _fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name == "errors":
            out["errors"] = s(json.dumps([e.as_dict() for e in value], separators=(",", ":")))
        elif isinstance(value, RequestCounts):
            # Only the total is set; chunks ADD the completed and failed counts.
            out["total"] = n(value.total)
        else:
            out[name] = _attr(value)
    return out


def to_item(batch: Batch) -> dict[str, Any]:
    fields = {
        "id": batch.id,
        "org_id": batch.org_id,
        "key_id": batch.key_id,
        "endpoint": batch.endpoint,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "created_at": batch.created_at,
        "window_ends_at": batch.expires_at,
        "expires_at": int(batch.retain_until),
        "status": batch.status,
        "metadata": batch.metadata,
        "request_counts": batch.request_counts,
    }
    return {
        **batch_key(batch.id),
        "owner": s(owner(batch.org_id, KIND)),
        "listed": s(listed(batch.created_at, batch.id)),
        "completed": n(0),
        "failed": n(0),
        "unrun": n(0),
        **_fields(fields),
    }


def _errors(item: Mapping[str, Any]) -> tuple[LineError, ...]:
    raw: list[dict[str, Any]] = json_attr(item, "errors", [])
    errors = [LineError(e["code"], e["message"], e.get("param"), e.get("line")) for e in raw]
    code = text(item, "error_code")
    if not errors and code:
        message = WORKFLOW_FAILURES.get(code, f"The batch failed in the workflow ({code}).")
        errors.append(LineError(code, message))
    return tuple(errors)


def from_item(item: Mapping[str, Any]) -> Batch:
    times = {name: at for name in ENTERED_AT.values() if (at := number(item, name)) is not None}
    return Batch(
        id=item["id"]["S"],
        org_id=item["org_id"]["S"],
        key_id=item["key_id"]["S"],
        endpoint=item["endpoint"]["S"],
        input_file_id=item["input_file_id"]["S"],
        completion_window=item["completion_window"]["S"],
        created_at=number(item, "created_at") or 0.0,
        expires_at=number(item, "window_ends_at") or 0.0,
        retain_until=number(item, "expires_at") or 0.0,
        status=item["status"]["S"],
        metadata={k: v["S"] for k, v in item.get("metadata", {}).get("M", {}).items()},
        request_counts=RequestCounts(
            int(number(item, "total") or 0),
            int(number(item, "completed") or 0),
            int(number(item, "failed") or 0),
        ),
        errors=_errors(item),
        output_file_id=text(item, "output_file_id"),
        error_file_id=text(item, "error_file_id"),
        execution_id=text(item, "execution_id"),
        chunk_count=int(number(item, "chunk_count") or 0),
        times=times,
    )


def _cancelled_by_condition(exc: ClientError) -> bool:
    reasons = exc.response.get("CancellationReasons", [])
    return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)


class DynamoBatchStore(StatusRecords):
    def __init__(self, client: Any, table: str) -> None:
        super().__init__(client, table, KIND, batch_key, _fields)

    def create_batch(self, batch: Batch) -> None:
        self._create(to_item(batch))

    def get_batch(self, batch_id: str) -> Batch | None:
        item = self._item(batch_id)
        return from_item(item) if item else None

    def list_batches(self, org_id: str, limit: int, after: str | None) -> tuple[list[Batch], bool]:
        return self._page(org_id, limit, after, from_item)

    def _chunk_key(self, batch_id: str, index: int) -> dict[str, Any]:
        return {"pk": s(f"BATCH#{batch_id}"), "sk": s(f"CHUNK#{index:06d}")}

    def chunk_results(self, batch_id: str, index: int) -> str | None:
        response = call(
            self._client.get_item,
            TableName=self._table,
            Key=self._chunk_key(batch_id, index),
            ConsistentRead=True,
        )
        item = response.get("Item")
        if item is None:
            return None
        return str(item.get("results", {}).get("S", ""))  # "": recorded before results keys

    def record_chunk(
        self, batch_id: str, index: int, counts: RequestCounts, unrun: int, results: str
    ) -> bool:
        batch = self._item(batch_id)
        retain = batch["expires_at"] if batch and "expires_at" in batch else n(0)
        chunk_item = {
            **self._chunk_key(batch_id, index),
            "results": s(results),
            "completed": n(counts.completed),
            "failed": n(counts.failed),
            "unrun": n(unrun),
            "expires_at": retain,
        }
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": chunk_item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": batch_key(batch_id),
                            "UpdateExpression": "ADD #c :c, #f :f, #u :u",
                            "ExpressionAttributeNames": {
                                "#c": "completed",
                                "#f": "failed",
                                "#u": "unrun",
                            },
                            "ExpressionAttributeValues": {
                                ":c": n(counts.completed),
                                ":f": n(counts.failed),
                                ":u": n(unrun),
                            },
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException" and (
                _cancelled_by_condition(exc)
            ):
                return False
            raise unavailable(exc) from exc
        except BotoCoreError as exc:
            raise unavailable(exc) from exc
        return True

    def unrun_lines(self, batch_id: str) -> int:
        item = self._item(batch_id)
        return int(number(item, "unrun") or 0) if item else 0
