"""Usage in DynamoDB (`usage` table):

- ledger, one per request: `pk=REQ#<request_id>`, `sk=LEDGER` (written once: the condition
  `attribute_not_exists(pk)` makes a retried settlement a no-op);
- hourly counters: `pk=KEY#<key_id>`, `sk=HOUR#<yyyy-mm-ddThh>#MODEL#<model>#EP#<endpoint>`
  and `pk=ORG#<org_id>`, `sk=HOUR#<hour>#KEY#<key_id>#MODEL#<model>#EP#<endpoint>`;
- `quota.threshold_crossed` events for webhook delivery: `pk=EVENT#<org_id>`,
  `sk=quota.threshold_crossed#<period>#<scope>#<scope_id>#<dimension>#<threshold>` (one per
  threshold, scope and period, by the same kind of condition).

Plus the reads behind GET /v1/usage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from gantry.adapters.dynamodb_quotas import quota_key, state_from_item
from gantry.domain.errors import ServiceUnavailable
from gantry.domain.limits import QuotaState
from gantry.domain.usage import QuotaWarning, UsageRow, hour_id, hour_start, threshold_event

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LEDGER_SK = "LEDGER"
LEDGER_TTL_SECONDS = 90 * 86_400
COUNTER_TTL_SECONDS = 400 * 86_400
EVENT_TTL_SECONDS = 90 * 86_400


def _n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def ledger_pk(request_id: str) -> str:
    return f"REQ#{request_id}"


def key_counter_key(key_id: str, hour: str, model: str, endpoint: str) -> dict[str, Any]:
    return {"pk": _s(f"KEY#{key_id}"), "sk": _s(f"HOUR#{hour}#MODEL#{model}#EP#{endpoint}")}


def org_counter_key(
    org_id: str, hour: str, key_id: str, model: str, endpoint: str
) -> dict[str, Any]:
    return {
        "pk": _s(f"ORG#{org_id}"),
        "sk": _s(f"HOUR#{hour}#KEY#{key_id}#MODEL#{model}#EP#{endpoint}"),
    }


@dataclass(frozen=True)
class Settled:
    """One request's real usage, as the ledger and the counters record it."""

    request_id: str
    key_id: str
    org_id: str
    model: str
    endpoint: str
    at: float
    prompt_tokens: int
    completion_tokens: int
    cost_nano: int
    reserved_tokens: int
    reserved_cost_nano: int
    cached_tokens: int = 0  # > 0 when the answer came from the response cache
    admission_id: str = ""  # which admission wrote the ledger item (a retried request has two)

    @property
    def hour(self) -> str:
        return hour_id(self.at)


def ledger_put(table: str, s: Settled) -> dict[str, Any]:
    item = {
        "pk": _s(ledger_pk(s.request_id)),
        "sk": _s(LEDGER_SK),
        "request_id": _s(s.request_id),
        "key_id": _s(s.key_id),
        "org_id": _s(s.org_id),
        "model": _s(s.model),
        "endpoint": _s(s.endpoint),
        "hour": _s(s.hour),
        "created_at": _n(round(s.at, 3)),
        "prompt_tokens": _n(s.prompt_tokens),
        "completion_tokens": _n(s.completion_tokens),
        "cost_nano": _n(s.cost_nano),
        "reserved_tokens": _n(s.reserved_tokens),
        "reserved_cost_nano": _n(s.reserved_cost_nano),
        "expires_at": _n(int(s.at) + LEDGER_TTL_SECONDS),
    }
    if s.cached_tokens:
        item["cached_tokens"] = _n(s.cached_tokens)
    if s.admission_id:
        item["admission"] = _s(s.admission_id)
    return {
        "TableName": table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(pk)",
        # A refused put returns the ledger item already there, to tell who wrote it.
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def counter_updates(table: str, s: Settled) -> list[dict[str, Any]]:
    """The key's and the organization's counter for the request's hour, model and endpoint."""
    keys = (
        key_counter_key(s.key_id, s.hour, s.model, s.endpoint),
        org_counter_key(s.org_id, s.hour, s.key_id, s.model, s.endpoint),
    )
    updates: list[dict[str, Any]] = [
        {
            "TableName": table,
            "Key": key,
            "UpdateExpression": (
                "SET #key_id = :key_id, #model = :model, #endpoint = :endpoint, #hour = :hour, "
                "#ttl = :ttl ADD #requests :one, #prompt :prompt, #completion :completion, "
                "#cost :cost"
            ),
            "ExpressionAttributeNames": {
                "#key_id": "key_id",
                "#model": "model",
                "#endpoint": "endpoint",
                "#hour": "hour",
                "#ttl": "expires_at",
                "#requests": "requests",
                "#prompt": "prompt_tokens",
                "#completion": "completion_tokens",
                "#cost": "cost_nano",
            },
            "ExpressionAttributeValues": {
                ":key_id": _s(s.key_id),
                ":model": _s(s.model),
                ":endpoint": _s(s.endpoint),
                ":hour": _s(s.hour),
                ":ttl": _n(int(s.at) + COUNTER_TTL_SECONDS),
                ":one": _n(1),
                ":prompt": _n(s.prompt_tokens),
                ":completion": _n(s.completion_tokens),
                ":cost": _n(s.cost_nano),
            },
        }
        for key in keys
    ]
    if s.cached_tokens:  # cache hits are counted apart as well
        for update in updates:
            update["UpdateExpression"] += ", cached_requests :one, cached_tokens :cached"
            update["ExpressionAttributeValues"][":cached"] = _n(s.cached_tokens)
    return updates


def event_put(
    table: str, warning: QuotaWarning, threshold: int, org_id: str, at: float
) -> dict[str, Any]:
    payload = threshold_event(warning, threshold, org_id)
    sk = (
        f"quota.threshold_crossed#{warning.period}#{warning.scope}#{warning.scope_id}"
        f"#{warning.dimension}#{threshold}"
    )
    return {
        "TableName": table,
        "Item": {
            "pk": _s(f"EVENT#{org_id}"),
            "sk": _s(sk),
            "type": _s("quota.threshold_crossed"),
            "org_id": _s(org_id),
            "status": _s("pending"),
            "created_at": _n(round(at, 3)),
            "payload": _s(json.dumps(payload, separators=(",", ":"))),
            "expires_at": _n(int(at) + EVENT_TTL_SECONDS),
        },
        "ConditionExpression": "attribute_not_exists(pk)",
    }


def row_from_item(item: Mapping[str, Any]) -> UsageRow:
    def number(name: str) -> int:
        value = item.get(name)
        return int(value["N"]) if value else 0

    return UsageRow(
        hour=hour_start(item["hour"]["S"]),
        key_id=item["key_id"]["S"],
        model=item["model"]["S"],
        endpoint=item["endpoint"]["S"],
        requests=number("requests"),
        prompt_tokens=number("prompt_tokens"),
        completion_tokens=number("completion_tokens"),
        cost_nano=number("cost_nano"),
        cached_requests=number("cached_requests"),
        cached_tokens=number("cached_tokens"),
    )


def _unavailable(exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(
        "The usage store is unavailable; retry shortly.",
        details={"subsystem": "database"},
        retry_after=1,
    )


class DynamoUsage:
    """The reads behind GET /v1/usage: hourly counters and the quota items."""

    def __init__(self, client: DynamoDBClient, usage_table: str, quotas_table: str) -> None:
        self._client = client
        self._usage = usage_table
        self._quotas = quotas_table

    def rows(self, pk: str, first_hour: int, last_hour: int) -> list[UsageRow]:
        """Counters of `pk` (KEY#.. or ORG#..) for the hours from first_hour to last_hour."""
        low = f"HOUR#{hour_id(first_hour)}"
        high = f"HOUR#{hour_id(last_hour)}#~"  # '~' sorts after every id character
        rows: list[UsageRow] = []
        params: dict[str, Any] = {
            "TableName": self._usage,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": {":pk": _s(pk), ":low": _s(low), ":high": _s(high)},
        }
        try:
            while True:
                page = self._client.query(**params)
                rows.extend(row_from_item(item) for item in page.get("Items", []))
                last = page.get("LastEvaluatedKey")
                if not last:
                    return rows
                params["ExclusiveStartKey"] = last
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

    def quota_states(self, pks: list[str]) -> dict[str, QuotaState]:
        """The current quota items (consistent reads), an empty state for absent ones."""
        if not pks:
            return {}
        keys: list[Any] = [quota_key(pk) for pk in dict.fromkeys(pks)]
        found: dict[str, QuotaState] = {pk: QuotaState() for pk in pks}
        request: dict[str, Any] = {self._quotas: {"Keys": keys, "ConsistentRead": True}}
        try:
            for _ in range(5):
                page = self._client.batch_get_item(RequestItems=request)
                for item in page.get("Responses", {}).get(self._quotas, []):
                    found[item["pk"]["S"]] = state_from_item(item)
                request = dict(page.get("UnprocessedKeys") or {})
                if not request:
                    break
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc
        return found
