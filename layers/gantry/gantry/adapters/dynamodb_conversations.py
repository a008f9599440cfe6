"""Conversations in DynamoDB (`conversations` table), one partition per conversation:

* `sk=META`: settings, counters, cumulative usage and the turn lock (`lk` holder, `lu` until);
  small, since every turn rewrites it;
* `sk=SETUP`: the system prompt and metadata, written once;
* `sk=SUMMARY`: the running summary (strategy `summarize`);
* `sk=MSG#<seq, 10 digits>`: one item per message, so no item grows with the history.

Every item carries the conversation's `expires_at` (TTL). "SETUP" and "SUMMARY" sort after
every "MSG#" key, so one descending query from the oldest message a turn needs returns them
first, then the messages newest first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from gantry.domain.conversations import (
    CommittedTurn,
    Conversation,
    ConversationBusy,
    GenerationDefaults,
    History,
    Setup,
    StoredMessage,
    Summary,
    TokenTotals,
    Turn,
    pair_turns,
)
from gantry.domain.errors import ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

T = TypeVar("T")

META, SETUP, SUMMARY = "META", "SETUP", "SUMMARY"
SEQ_DIGITS = 10
OLDER_PAGE = 64  # messages per read when a context reaches further back than the last one
DELETE_BATCH = 25  # BatchWriteItem's limit


def msg_sk(seq: int) -> str:
    return f"MSG#{seq:0{SEQ_DIGITS}d}"


def _pk(conversation_id: str) -> dict[str, Any]:
    return {"S": f"CONV#{conversation_id}"}


def _key(conversation_id: str, sk: str) -> dict[str, Any]:
    return {"pk": _pk(conversation_id), "sk": {"S": sk}}


def _n(value: float | int) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _int(item: dict[str, Any], name: str, default: int = 0) -> int:
    value = item.get(name)
    return int(value["N"]) if value else default


def _float(item: dict[str, Any], name: str) -> float:
    return float(item[name]["N"])


def _str(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value else None


# --- items ----------------------------------------------------------------------------------


def meta_item(c: Conversation) -> dict[str, Any]:
    return {
        **_key(c.id, META),
        "id": {"S": c.id},
        "org_id": {"S": c.org_id},
        "key_id": {"S": c.key_id},
        "model": {"S": c.model},
        "strategy": {"S": c.strategy},
        "defaults": {"S": json.dumps(c.defaults.as_dict(), separators=(",", ":"))},
        "created_at": _n(c.created_at),
        "expires_at": _n(int(c.expires_at)),
        "retention": _n(c.retention_seconds),
        "system_tokens": _n(c.system_tokens),
        "next_seq": _n(c.next_seq),
        "turns": _n(c.turns),
        "prompt_tokens": _n(c.usage.prompt_tokens),
        "completion_tokens": _n(c.usage.completion_tokens),
        "cost_nano": _n(c.usage.cost_nano),
        "context_tokens": _n(c.context_tokens),
        "context_from": _n(c.context_from),
        "summary_through": _n(c.summary_through),
        "summary_tokens": _n(c.summary_tokens),
    }


def conversation_from(item: dict[str, Any]) -> Conversation:
    return Conversation(
        id=item["id"]["S"],
        org_id=item["org_id"]["S"],
        key_id=item["key_id"]["S"],
        model=item["model"]["S"],
        strategy=item["strategy"]["S"],
        defaults=GenerationDefaults.from_dict(json.loads(item["defaults"]["S"])),
        created_at=_float(item, "created_at"),
        expires_at=_float(item, "expires_at"),
        retention_seconds=_int(item, "retention"),
        system_tokens=_int(item, "system_tokens"),
        next_seq=_int(item, "next_seq", 1),
        turns=_int(item, "turns"),
        usage=TokenTotals(
            _int(item, "prompt_tokens"), _int(item, "completion_tokens"), _int(item, "cost_nano")
        ),
        context_tokens=_int(item, "context_tokens"),
        context_from=_int(item, "context_from", 1),
        summary_through=_int(item, "summary_through"),
        summary_tokens=_int(item, "summary_tokens"),
    )


def setup_item(c: Conversation, setup: Setup) -> dict[str, Any]:
    item: dict[str, Any] = {
        **_key(c.id, SETUP),
        "metadata": {"M": {k: {"S": v} for k, v in setup.metadata.items()}},
        "expires_at": _n(int(c.expires_at)),
    }
    if setup.system:
        item["system"] = {"S": setup.system}
    return item


def setup_from(item: dict[str, Any] | None) -> Setup:
    if item is None:
        return Setup()
    metadata = {k: v["S"] for k, v in item.get("metadata", {}).get("M", {}).items()}
    return Setup(_str(item, "system"), metadata)


def summary_item(c: Conversation, summary: Summary) -> dict[str, Any]:
    return {
        **_key(c.id, SUMMARY),
        "text": {"S": summary.text},
        "tokens": _n(summary.tokens),
        "through": _n(summary.through),
        "expires_at": _n(int(c.expires_at)),
    }


def summary_from(item: dict[str, Any]) -> Summary:
    return Summary(item["text"]["S"], _int(item, "tokens"), _int(item, "through"))


def message_item(c: Conversation, m: StoredMessage) -> dict[str, Any]:
    item: dict[str, Any] = {
        **_key(c.id, msg_sk(m.seq)),
        "seq": _n(m.seq),
        "role": {"S": m.role},
        "content": {"S": m.content},
        "tokens": _n(m.tokens),
        "created_at": _n(m.created_at),
        "status": {"S": m.status},
        "expires_at": _n(int(c.expires_at)),
    }
    if m.finish_reason is not None:
        item["finish_reason"] = {"S": m.finish_reason}
    if m.usage is not None:
        item["prompt_tokens"] = _n(m.usage.prompt_tokens)
        item["completion_tokens"] = _n(m.usage.completion_tokens)
        item["cost_nano"] = _n(m.usage.cost_nano)
    return item


def message_from(conversation_id: str, item: dict[str, Any]) -> StoredMessage:
    usage = None
    if "prompt_tokens" in item:
        usage = TokenTotals(
            _int(item, "prompt_tokens"), _int(item, "completion_tokens"), _int(item, "cost_nano")
        )
    return StoredMessage(
        conversation_id=conversation_id,
        seq=_int(item, "seq"),
        role=item["role"]["S"],
        content=item["content"]["S"],
        tokens=_int(item, "tokens"),
        created_at=_float(item, "created_at"),
        status=item.get("status", {}).get("S", "completed"),
        finish_reason=_str(item, "finish_reason"),
        usage=usage,
    )


# --- errors ---------------------------------------------------------------------------------


def _unavailable(exc: Exception) -> ServiceUnavailable:
    error = ServiceUnavailable(
        "The conversation store is unavailable; retry shortly.",
        details={"subsystem": "database"},
        retry_after=1,
    )
    error.__cause__ = exc
    return error


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _lost_condition(exc: ClientError) -> bool:
    if _code(exc) == "ConditionalCheckFailedException":
        return True
    if _code(exc) != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    return any(str(r.get("Code")) == "ConditionalCheckFailed" for r in reasons)


class DynamoConversationStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _call(self, operation: Callable[..., T], **kwargs: Any) -> T:
        try:
            return operation(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

    # --- the conversation ---------------------------------------------------------------------

    def create(self, conversation: Conversation, setup: Setup) -> None:
        new = "attribute_not_exists(pk)"
        self._call(
            self._client.transact_write_items,
            TransactItems=[
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": meta_item(conversation),
                        "ConditionExpression": new,
                    }
                },
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": setup_item(conversation, setup),
                        "ConditionExpression": new,
                    }
                },
            ],
        )

    def get(self, conversation_id: str) -> Conversation | None:
        response = self._call(
            self._client.get_item,
            TableName=self._table,
            Key=_key(conversation_id, META),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return conversation_from(item) if item else None

    def get_with_setup(self, conversation_id: str) -> tuple[Conversation, Setup] | None:
        keys = [_key(conversation_id, META), _key(conversation_id, SETUP)]
        found: dict[str, dict[str, Any]] = {}
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
        while request:
            response = self._call(self._client.batch_get_item, RequestItems=request)
            for item in response.get("Responses", {}).get(self._table, []):
                found[item["sk"]["S"]] = item
            request = dict(response.get("UnprocessedKeys") or {})
        if META not in found:
            return None
        return conversation_from(found[META]), setup_from(found.get(SETUP))

    def delete(self, conversation_id: str, org_id: str, now: float) -> bool:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=_key(conversation_id, META),
                ConditionExpression="org_id = :org AND expires_at > :now",
                ExpressionAttributeValues={":org": {"S": org_id}, ":now": _n(now)},
            )
        except ClientError as exc:
            if _lost_condition(exc):
                return False
            raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
        # Without META the conversation is gone for every reader; the rest follows.
        batch: list[dict[str, Any]] = []
        for key in self._keys(conversation_id):
            batch.append({"DeleteRequest": {"Key": key}})
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)
        return True

    def _keys(self, conversation_id: str) -> Iterator[dict[str, Any]]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _pk(conversation_id)},
            "ProjectionExpression": "pk, sk",
        }
        while True:
            response = self._call(self._client.query, **query)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _delete_batch(self, requests: list[dict[str, Any]]) -> None:
        pending: dict[str, Any] = {self._table: requests}
        while pending:
            response = self._call(self._client.batch_write_item, RequestItems=pending)
            pending = dict(response.get("UnprocessedItems") or {})

    # --- a turn -------------------------------------------------------------------------------

    def lock(
        self, conversation_id: str, org_id: str, holder: str, now: float, until: float
    ) -> Conversation | None:
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=_key(conversation_id, META),
                UpdateExpression="SET lk = :holder, lu = :until",
                ConditionExpression=(
                    "org_id = :org AND expires_at > :now AND "
                    "(attribute_not_exists(lk) OR lu <= :now)"
                ),
                ExpressionAttributeValues={
                    ":holder": {"S": holder},
                    ":until": _n(until),
                    ":org": {"S": org_id},
                    ":now": _n(now),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _lost_condition(exc):
                raise _unavailable(exc) from exc
            failed: Any = exc.response  # ReturnValuesOnConditionCheckFailure puts it here
            item = failed.get("Item")
            if not item or item["org_id"]["S"] != org_id or _float(item, "expires_at") <= now:
                return None
            raise ConversationBusy(
                "Another message to this conversation is being answered.",
                retry_after=max(0.0, _float(item, "lu") - now) if "lu" in item else None,
            ) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
        return conversation_from(response["Attributes"])

    def unlock(self, conversation_id: str, holder: str) -> None:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(conversation_id, META),
                UpdateExpression="REMOVE lk, lu",
                ConditionExpression="lk = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )
        except ClientError as exc:
            if not _lost_condition(exc):
                raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc

    def history(
        self, conversation: Conversation, first_turn: int, hint_turn: int, budget: int | None
    ) -> History:
        cid = conversation.id
        first_seq, hint_seq = 2 * first_turn - 1, 2 * max(first_turn, hint_turn) - 1
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk >= :from",
            "ExpressionAttributeValues": {":pk": _pk(cid), ":from": {"S": msg_sk(hint_seq)}},
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        setup: dict[str, Any] | None = None
        summary: Summary | None = None
        messages: list[StoredMessage] = []
        for item in self._pages(query):
            sk = item["sk"]["S"]
            if sk == SETUP:
                setup = item
            elif sk == SUMMARY:
                summary = summary_from(item)
            else:
                messages.append(message_from(cid, item))
        messages = [m for m in messages if m.seq < conversation.next_seq]
        turns = pair_turns(messages)
        complete = hint_seq <= first_seq
        if not complete and (budget is None or sum(t.tokens for t in turns) <= budget):
            older, complete = self._older(conversation, first_seq, hint_seq - 1, budget, turns)
            turns = older + turns
        return History(setup_from(setup).system, summary, tuple(turns), complete)

    def _older(
        self,
        conversation: Conversation,
        first_seq: int,
        last_seq: int,
        budget: int | None,
        newer: list[Turn],
    ) -> tuple[list[Turn], bool]:
        """Turns before `last_seq` (a reply), newest first, until `budget` is exceeded."""
        cid = conversation.id
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": _pk(cid),
                ":lo": {"S": msg_sk(first_seq)},
                ":hi": {"S": msg_sk(last_seq)},
            },
            "ScanIndexForward": False,
            "ConsistentRead": True,
            "Limit": OLDER_PAGE,
        }
        used = sum(t.tokens for t in newer)
        messages: list[StoredMessage] = []
        while True:
            response = self._call(self._client.query, **query)
            messages.extend(message_from(cid, item) for item in response.get("Items", []))
            turns = pair_turns(messages)
            if "LastEvaluatedKey" not in response:
                return turns, True
            if budget is not None and used + sum(t.tokens for t in turns) > budget:
                return turns, False
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _pages(self, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            response = self._call(self._client.query, **query)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            query = {**query, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    def commit(
        self, conversation: Conversation, holder: str, turn: CommittedTurn, after: Conversation
    ) -> bool:
        new = "attribute_not_exists(pk)"
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": message_item(conversation, message),
                    "ConditionExpression": new,
                }
            }
            for message in (turn.user, turn.reply)
        ]
        items.append(
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _key(conversation.id, META),
                    "UpdateExpression": (
                        "SET next_seq = :next, turns = :turns, context_tokens = :ctx, "
                        "context_from = :from, summary_through = :sthrough, "
                        "summary_tokens = :stokens "
                        "ADD prompt_tokens :pt, completion_tokens :ct, cost_nano :cost "
                        "REMOVE lk, lu"
                    ),
                    "ConditionExpression": "lk = :holder",
                    "ExpressionAttributeValues": {
                        ":next": _n(after.next_seq),
                        ":turns": _n(after.turns),
                        ":ctx": _n(after.context_tokens),
                        ":from": _n(after.context_from),
                        ":sthrough": _n(after.summary_through),
                        ":stokens": _n(after.summary_tokens),
                        ":pt": _n(turn.usage.prompt_tokens),
                        ":ct": _n(turn.usage.completion_tokens),
                        ":cost": _n(turn.usage.cost_nano),
                        ":holder": {"S": holder},
                    },
                }
            }
        )
        if turn.summary is not None:
            items.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": summary_item(conversation, turn.summary),
                    }
                }
            )
        try:
            self._client.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
        except ClientError as exc:
            if _lost_condition(exc):
                return False
            raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
        return True

    # --- listing ------------------------------------------------------------------------------

    def messages(
        self, conversation_id: str, after: int | None, limit: int, ascending: bool, below: int
    ) -> tuple[list[StoredMessage], bool]:
        if ascending:
            lo, hi = (after or 0) + 1, below - 1
        else:
            lo, hi = 1, min(below, after if after is not None else below) - 1
        if lo > hi:
            return [], False
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": _pk(conversation_id),
                ":lo": {"S": msg_sk(lo)},
                ":hi": {"S": msg_sk(hi)},
            },
            "ScanIndexForward": ascending,
            "ConsistentRead": True,
            "Limit": limit + 1,
        }
        found: list[StoredMessage] = []
        while len(found) <= limit:
            response = self._call(self._client.query, **query)
            found.extend(message_from(conversation_id, i) for i in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
            query["Limit"] = limit + 1 - len(found)
        return found[:limit], len(found) > limit
