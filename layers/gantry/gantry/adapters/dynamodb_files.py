"""File metadata in the `jobs` table: `pk=FILE#<file_id>`, `sk=META`, listed by owner."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gantry.adapters.dynamodb_job_items import (
    META,
    call,
    listed,
    n,
    number,
    owned_items,
    owner,
    page_of,
    s,
    text,
)
from gantry.domain.files import FileObject

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

KIND = "file"


def _key(file_id: str) -> dict[str, Any]:
    return {"pk": s(f"FILE#{file_id}"), "sk": s(META)}


def to_item(file: FileObject, content_key: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        **_key(file.id),
        "owner": s(owner(file.org_id, KIND)),
        "listed": s(listed(file.created_at, file.id)),
        "id": s(file.id),
        "org_id": s(file.org_id),
        "purpose": s(file.purpose),
        "filename": s(file.filename),
        "bytes": n(file.bytes),
        "created_at": n(file.created_at),
        "lines": n(file.lines),
        "content_key": s(content_key),
    }
    if file.example_format:
        item["example_format"] = s(file.example_format)
    return item


def from_item(item: dict[str, Any]) -> FileObject:
    return FileObject(
        id=item["id"]["S"],
        org_id=item["org_id"]["S"],
        purpose=item["purpose"]["S"],
        filename=item["filename"]["S"],
        bytes=int(number(item, "bytes") or 0),
        created_at=number(item, "created_at") or 0.0,
        lines=int(number(item, "lines") or 0),
        example_format=text(item, "example_format"),
    )


class DynamoFileIndex:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def put_file(self, file: FileObject, key: str) -> None:
        call(self._client.put_item, TableName=self._table, Item=to_item(file, key))

    def _item(self, file_id: str) -> dict[str, Any] | None:
        response = call(
            self._client.get_item, TableName=self._table, Key=_key(file_id), ConsistentRead=True
        )
        return response.get("Item")

    def get_file(self, file_id: str) -> tuple[FileObject, str] | None:
        item = self._item(file_id)
        return (from_item(item), item["content_key"]["S"]) if item else None

    def list_files(
        self, org_id: str, purpose: str | None, limit: int, after: str | None, newest_first: bool
    ) -> tuple[list[FileObject], bool]:
        start = None
        if after is not None:
            start = self._item(after)
            if start is None or start["org_id"]["S"] != org_id:
                return [], False
        filters: dict[str, Any] = {}
        if purpose is not None:
            filters = {
                "filter_expression": "purpose = :purpose",
                "filter_values": {":purpose": s(purpose)},
            }
        items = owned_items(
            self._client,
            self._table,
            owner(org_id, KIND),
            newest_first=newest_first,
            start=start,
            **filters,
        )
        return page_of((from_item(i) for i in items), limit)

    def delete_file(self, file_id: str) -> bool:
        response = call(
            self._client.delete_item,
            TableName=self._table,
            Key=_key(file_id),
            ReturnValues="ALL_OLD",
        )
        return bool(response.get("Attributes"))
