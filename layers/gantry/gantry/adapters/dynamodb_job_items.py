"""What the `jobs` table's stores share: attribute encoding, owner listings, error mapping.

Every listed item carries `owner = "<org_id>#<kind>"` and `listed = "<ISO time>#<id>"`,
the key of the `by_org` index, so one Query lists one organization's files, jobs, models
or webhook endpoints in time order. The workflow writes some items itself with
`$$.State.EnteredTime`, an ISO string, which is why times in keys are ISO too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from gantry.domain.errors import ServiceUnavailable

INDEX = "by_org"
META = "META"
T = TypeVar("T")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")


def from_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def owner(org_id: str, kind: str) -> str:
    return f"{org_id}#{kind}"


def listed(at: float, item_id: str) -> str:
    return f"{iso(at)}#{item_id}"


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: float) -> dict[str, str]:
    return {"N": repr(int(value)) if float(value).is_integer() else repr(float(value))}


def text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value and "S" in value else None


def number(item: Mapping[str, Any], name: str) -> float | None:
    """A time or count written as a number, or as an ISO string by the workflow."""
    value = item.get(name)
    if not value:
        return None
    if "N" in value:
        return float(value["N"])
    if value.get("S"):
        return from_iso(value["S"])
    return None


def json_attr(item: Mapping[str, Any], name: str, default: T) -> T:
    raw = text(item, name)
    if not raw:
        return default
    value: T = json.loads(raw)
    return value


def unavailable(exc: Exception, what: str = "job store") -> ServiceUnavailable:
    error = ServiceUnavailable(
        f"The {what} is unavailable; retry shortly.",
        details={"subsystem": "database"},
        retry_after=1,
    )
    error.__cause__ = exc
    return error


def is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def call(operation: Callable[..., T], **kwargs: Any) -> T:
    try:
        return operation(**kwargs)
    except (BotoCoreError, ClientError) as exc:
        raise unavailable(exc) from exc


def conditional(operation: Callable[..., Any], **kwargs: Any) -> bool:
    """True if the write happened, False if its condition failed."""
    try:
        operation(**kwargs)
    except ClientError as exc:
        if is_condition_failure(exc):
            return False
        raise unavailable(exc) from exc
    except BotoCoreError as exc:
        raise unavailable(exc) from exc
    return True


def query_pages(client: Any, **params: Any) -> Iterator[dict[str, Any]]:
    while True:
        page = call(client.query, **params)
        yield from page.get("Items", [])
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        params["ExclusiveStartKey"] = last


def owned_items(
    client: Any,
    table: str,
    owner_key: str,
    *,
    newest_first: bool = True,
    start: Mapping[str, Any] | None = None,
    filter_expression: str | None = None,
    filter_values: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """An owner's items from the `by_org` index, in time order, after `start` (an item)."""
    params: dict[str, Any] = {
        "TableName": table,
        "IndexName": INDEX,
        "KeyConditionExpression": "#owner = :owner",
        "ExpressionAttributeNames": {"#owner": "owner"},
        "ExpressionAttributeValues": {":owner": s(owner_key), **(filter_values or {})},
        "ScanIndexForward": not newest_first,
    }
    if filter_expression:
        params["FilterExpression"] = filter_expression
    if start is not None:
        params["ExclusiveStartKey"] = {
            name: start[name] for name in ("pk", "sk", "owner", "listed")
        }
    yield from query_pages(client, **params)


def page_of(items: Iterator[T], limit: int) -> tuple[list[T], bool]:
    found: list[T] = []
    for item in items:
        if len(found) == limit:
            return found, True
        found.append(item)
    return found, False


def update_attributes(
    client: Any,
    table: str,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    condition: str,
    condition_values: Mapping[str, Any] | None = None,
) -> bool:
    """SET these encoded attributes if `condition` holds; False if it does not. Attribute
    `name` is `#name` in the condition; its new value is `:set_name`, so the condition's
    own values (`condition_values`) cannot collide with them."""
    return conditional(
        client.update_item,
        TableName=table,
        Key=key,
        UpdateExpression="SET " + ", ".join(f"#{name} = :set_{name}" for name in values),
        ConditionExpression=condition,
        ExpressionAttributeNames={f"#{name}": name for name in [*values, *_names_in(condition)]},
        ExpressionAttributeValues={
            **{f":set_{name}": value for name, value in values.items()},
            **(condition_values or {}),
        },
    )


def _names_in(condition: str) -> list[str]:
    return re.findall(r"#(\w+)", condition)


def set_status(
    client: Any,
    table: str,
    key: Mapping[str, Any],
    allowed: Sequence[str],
    status: str,
    values: Mapping[str, Any],
) -> bool:
    """SET `status` and these encoded attributes if the status is one of `allowed`."""
    refs = {f":allowed{i}": s(state) for i, state in enumerate(allowed)}
    return update_attributes(
        client,
        table,
        key,
        {**values, "status": s(status)},
        f"#status IN ({', '.join(refs)})",
        refs,
    )


def owned_page(
    client: Any,
    table: str,
    org_id: str,
    kind: str,
    limit: int,
    after: str | None,
    lookup: Callable[[str], Mapping[str, Any] | None],
    convert: Callable[[Mapping[str, Any]], T],
) -> tuple[list[T], bool]:
    """A page of one organization's items of one kind, newest first, after the item whose
    id is `after` (found by `lookup`); a cursor naming nothing of this organization gives
    an empty page."""
    start = None
    if after is not None:
        start = lookup(after)
        if start is None or start["org_id"]["S"] != org_id:
            return [], False
    items = owned_items(client, table, owner(org_id, kind), start=start)
    return page_of((convert(i) for i in items), limit)


class StatusRecords:
    """What the stores of records with a status (fine-tuning jobs, batches) share: a
    `META` item per record, owner listings, conditional status changes, field updates.
    Each store says how a record's id becomes its key and how its fields are encoded."""

    def __init__(
        self,
        client: Any,
        table: str,
        kind: str,
        key: Callable[[str], dict[str, Any]],
        encode: Callable[[Mapping[str, Any]], dict[str, Any]],
    ) -> None:
        self._client = client
        self._table = table
        self.kind = kind
        self._key = key
        self._encode = encode

    def _create(self, item: Mapping[str, Any]) -> None:
        call(
            self._client.put_item,
            TableName=self._table,
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )

    def _item(self, record_id: str) -> dict[str, Any] | None:
        response = call(
            self._client.get_item,
            TableName=self._table,
            Key=self._key(record_id),
            ConsistentRead=True,
        )
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _page(
        self,
        org_id: str,
        limit: int,
        after: str | None,
        convert: Callable[[Mapping[str, Any]], T],
    ) -> tuple[list[T], bool]:
        return owned_page(
            self._client, self._table, org_id, self.kind, limit, after, self._item, convert
        )

    def transition(
        self, record_id: str, allowed: Sequence[str], status: str, fields: Mapping[str, Any]
    ) -> bool:
        values = self._encode(fields)
        return set_status(self._client, self._table, self._key(record_id), allowed, status, values)

    def set_fields(self, record_id: str, fields: Mapping[str, Any]) -> None:
        values = self._encode(fields)
        if values:
            key = self._key(record_id)
            update_attributes(self._client, self._table, key, values, "attribute_exists(pk)")
