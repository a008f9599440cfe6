"""What a conversation costs in DynamoDB per turn as it grows to 200 turns.

Each strategy runs one conversation of `TURNS` turns on `gantry-small` (4,096-token window,
64-token replies) through the app in-process, against the local DynamoDB emulator. A
botocore hook sees every call: its operation, table and items, from which the read and
write units follow DynamoDB's billing rules. The target is that a turn's reads and writes
are bounded by what fits the context window, not by the length of the history.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.metering import READ_PRICE, WRITE_PRICE, bench_stack, item_size

TURNS = 200
CHECKPOINTS = (10, 50, 100, 150, 200)
SPAN = 10  # turns averaged at each checkpoint
MAX_TOKENS = 64
STRATEGIES = ("truncate", "summarize")
TOPICS = (
    "the weather in the mountains",
    "baking bread at home",
    "backing up a laptop",
    "planning a train journey",
    "how clouds form",
    "storing data in a database",
    "cooking rice",
    "a quiet village by the sea",
)
READS = frozenset({"GetItem", "BatchGetItem", "Query"})
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})


@dataclass
class TurnCost:
    """DynamoDB work of one turn on the conversations table (metering's calls apart)."""

    reads: int = 0
    writes: int = 0
    read_units: float = 0.0
    write_units: float = 0.0
    items_read: int = 0
    metering_calls: int = 0
    prompt_tokens: int = 0
    summarized: bool = False
    left_out: int = 0  # oldest turns not sent verbatim (dropped or summarised)


@dataclass
class Run:
    strategy: str
    turns: list[TurnCost] = field(default_factory=list)

    def span(self, end: int) -> list[TurnCost]:
        return self.turns[max(0, end - SPAN) : end]


class Counter:
    """A botocore hook pair: parameters before each call, the response after it."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.meta_size = 0
        self.current = TurnCost()

    def before(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["bench_params"] = params

    def after(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        params = context.get("bench_params") or {}
        operation = model.name
        tables = set(_tables(operation, params))
        if self.table not in tables:
            self.current.metering_calls += 1
            return
        if operation in READS:
            self.current.reads += 1
            items = list(_items_read(operation, parsed))
            self.current.items_read += len(items)
            sizes = [item_size(item) for item in items]
            if operation == "Query":
                self.current.read_units += max(1, math.ceil(sum(sizes) / 4096))
            else:
                self.current.read_units += sum(max(1, math.ceil(s / 4096)) for s in sizes)
        elif operation in WRITES:
            self.current.writes += 1
            self.current.write_units += self._write_units(operation, params, parsed)

    def _write_units(self, operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> int:
        if operation == "UpdateItem":  # the turn lock: returns the conversation's record
            self.meta_size = item_size(parsed.get("Attributes") or {}) or self.meta_size
            return max(1, math.ceil(self.meta_size / 1024))
        if operation == "PutItem":
            return max(1, math.ceil(item_size(params["Item"]) / 1024))
        if operation == "TransactWriteItems":
            total = 0
            for entry in params["TransactItems"]:
                ((kind, body),) = entry.items()
                size = item_size(body["Item"]) if kind == "Put" else self.meta_size
                total += 2 * max(1, math.ceil(size / 1024))
            return total
        return 1


def _tables(operation: str, params: dict[str, Any]) -> Iterator[str]:
    if operation == "TransactWriteItems":
        for entry in params.get("TransactItems", []):
            ((_, body),) = entry.items()
            yield body["TableName"]
    elif operation in ("BatchGetItem", "BatchWriteItem"):
        yield from params.get("RequestItems", {})
    elif "TableName" in params:
        yield params["TableName"]


def _items_read(operation: str, parsed: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if operation == "Query":
        yield from parsed.get("Items", [])
    elif operation == "GetItem" and "Item" in parsed:
        yield parsed["Item"]
    elif operation == "BatchGetItem":
        for items in parsed.get("Responses", {}).values():
            yield from items


def _message(n: int) -> str:
    return f"Question {n}: tell me more about {TOPICS[n % len(TOPICS)]}."


def measure(turns: int = TURNS) -> list[Run]:
    """One conversation per strategy, `turns` turns each, in a fresh local stack."""
    from fastapi.testclient import TestClient

    from gantry.adapters.aws import client
    from gantry.domain.keys import new_api_key
    from gantry.http.app import create_app

    key = new_api_key()[0]
    stack = bench_stack(key)
    runtime = stack.runtime
    counter = Counter(runtime.settings.conversations_table)
    dynamodb = client("dynamodb", runtime.settings)
    dynamodb.meta.events.register("before-parameter-build.dynamodb.*", counter.before)
    dynamodb.meta.events.register("after-call.dynamodb.*", counter.after)
    headers = {"Authorization": f"Bearer {key}"}
    runs = []
    try:
        with TestClient(create_app()) as http:
            for strategy in STRATEGIES:
                body = {
                    "model": "gantry-small",
                    "strategy": strategy,
                    "system": "You are a helpful assistant. Keep answers short.",
                    "defaults": {"max_tokens": MAX_TOKENS, "seed": 7},
                }
                created = http.post("/v1/conversations", json=body, headers=headers)
                assert created.status_code == 200, created.text
                path = f"/v1/conversations/{created.json()['id']}/messages"
                run = Run(strategy)
                for n in range(1, turns + 1):
                    counter.current = TurnCost()
                    response = http.post(path, json={"content": _message(n)}, headers=headers)
                    assert response.status_code == 200, response.text
                    context = response.json()["context"]
                    counter.current.prompt_tokens = context["prompt_tokens"]
                    counter.current.summarized = context["summary_updated"]
                    counter.current.left_out = context["first_turn"] - 1
                    run.turns.append(counter.current)
                runs.append(run)
    finally:
        stack.aws.stop()
    return runs


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def section(runs: list[Run]) -> str:
    rows = [
        "| strategy | turns | messages stored | items read / turn | reads / turn "
        "| writes / turn | read units / turn | write units / turn | prompt tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for end in CHECKPOINTS:
            if end > len(run.turns):
                continue
            span = run.span(end)
            rows.append(
                f"| {run.strategy} | {end - len(span) + 1}-{end} | {2 * end} "
                f"| {_mean([t.items_read for t in span]):.1f} "
                f"| {_mean([t.reads for t in span]):.2f} "
                f"| {_mean([t.writes for t in span]):.2f} "
                f"| {_mean([t.read_units for t in span]):.2f} "
                f"| {_mean([t.write_units for t in span]):.2f} "
                f"| {_mean([t.prompt_tokens for t in span]):,.0f} |"
            )
    summary_lines = []
    for run in runs:
        full = next((n for n, t in enumerate(run.turns, 1) if t.left_out), len(run.turns))
        late = run.turns[full:] or run.turns
        cost = _mean([t.read_units * READ_PRICE + t.write_units * WRITE_PRICE for t in late])
        summaries = sum(t.summarized for t in run.turns)
        metering = _mean([t.metering_calls for t in run.turns])
        summary_lines.append(
            f"- `{run.strategy}`: the window is full from turn {full}; after that about "
            f"**${cost:.2f} per million turns** in DynamoDB for the conversation itself; "
            f"{summaries} turns rewrote the summary; {metering:.1f} other calls per turn "
            "(admission and settlement of each model call, a summary call adding its own)."
        )
    return (
        "\n".join(rows)
        + "\n\n"
        + "\n".join(summary_lines)
        + "\n\nReads and writes per turn stop growing once the context window is full: "
        "a turn reads the newest messages back to where its context "
        "starts, never the whole history. The reads are consistent (1 unit per 4 KB read "
        "by a query); the writes are the turn lock (one conditional update of the small "
        "`META` item) and one transaction that stores the two messages, updates the "
        "counters and releases the lock (2 units per item up to 1 KB), plus the summary "
        "item when a turn rewrites it."
    )
