"""What limits and usage cost per request: DynamoDB round trips, write and read units (and
their on-demand price), and the local server's throughput with metering on and off.

`python -m bench.metering --port N` serves the API like `gantry dev`, with the benchmark
key's organization given limits high enough that the load is never refused (every dimension
is still enforced, so every request pays for the full admission and settlement), and with
the local DynamoDB applying one request at a time, as DynamoDB applies each conditional
write atomically (moto's threaded server does not).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

WRITE_PRICE = 0.625  # USD per million write request units, on-demand
READ_PRICE = 0.125  # USD per million read request units
LEASE_BYTES = 1 + 12 + 11  # an in-flight lease attribute: "L" + 12 hex, a 19-digit number

BENCH_LIMITS = {
    "requests_per_minute": 10**9,
    "request_burst": 10**9,
    "tokens_per_minute": 10**11,
    "tokens_per_day": 10**12,
    "concurrent_requests": 100_000,
    "monthly_budget_usd": 10.0**9,
}


def raise_limits(runtime: Any) -> None:
    from gantry.domain.orgs import Limits, Organization
    from gantry.local.moto_env import LOCAL_ORG

    runtime.key_store.put_org(
        Organization(LOCAL_ORG, name="benchmark", tier="custom", limits=Limits(**BENCH_LIMITS))  # type: ignore[arg-type]
    )


def bench_stack(admin_key: str) -> Any:
    """The local stack (moto in this process) with the benchmark organization's limits."""
    from gantry.local.server import bootstrap

    stack = bootstrap(admin_key)
    raise_limits(stack.runtime)
    return stack


def attach(endpoint_url: str, admin_key: str) -> Any:
    """A runtime on a DynamoDB emulator in another process, seeded like `bootstrap`."""
    from gantry.adapters.aws import client, reset_clients
    from gantry.config import get_settings
    from gantry.local.moto_env import create_tables, key_record, use_fake_credentials
    from gantry.runtime import Runtime, set_runtime

    use_fake_credentials()
    os.environ["GANTRY_AWS_ENDPOINT_URL"] = endpoint_url
    get_settings.cache_clear()
    reset_clients()
    runtime = Runtime(get_settings())
    set_runtime(runtime)
    create_tables(client("dynamodb", runtime.settings), runtime.settings)
    runtime.key_store.put_key(key_record(admin_key, runtime.pepper()))
    raise_limits(runtime)
    for provider in runtime.providers.values():
        warm = getattr(provider, "warm", None)
        if callable(warm):
            warm()
    return runtime


def serve(port: int, admin_key: str, endpoint_url: str) -> None:
    """The API on `port`, its DynamoDB at `endpoint_url` (so this process's CPU time is
    Gantry's alone)."""
    import uvicorn

    from gantry.http.app import create_app
    from gantry.local.server import bind

    attach(endpoint_url, admin_key)
    config = uvicorn.Config(create_app(), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[bind("127.0.0.1", port)])


def serve_dynamodb(port: int) -> None:
    """The DynamoDB emulator alone, one request at a time, until killed."""
    from gantry.local.moto_env import start_moto_server

    start_moto_server(port=port)
    threading.Event().wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(port: int, pid: int, headers: dict[str, str], requests: int = 400) -> float:
    """Milliseconds of the server's CPU per chat request, one request at a time."""
    import httpx

    body = {"model": "gantry-echo", "messages": [{"role": "user", "content": "Hello there"}]}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        for _ in range(20):
            http.post("/v1/chat/completions", json=body)
        before = cpu_seconds(pid)
        for _ in range(requests):
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
        return (cpu_seconds(pid) - before) * 1000 / requests


def logic_cpu_ms(rounds: int = 2000) -> float:
    """CPU of the metering logic alone per request (planning, expressions, item parsing,
    headers, settlement items), without any client or network."""
    import time

    from gantry.adapters.dynamodb_quotas import charge_params, refund_params, state_from_item
    from gantry.adapters.dynamodb_usage import Settled, counter_updates, ledger_put
    from gantry.domain.limits import (
        NS,
        ORG,
        Charge,
        Reservation,
        ScopeLimits,
        charged,
        hold_of,
        lease_id,
        limit_views,
        plan_charge,
        rate_limit_headers,
        refund,
        to_ns,
    )
    from gantry.domain.orgs import TIERS
    from gantry.domain.usage import quota_warnings, warning_header

    org = ScopeLimits.of(ORG, "org", TIERS["enterprise"])
    now = to_ns(time.time())
    item = {"pk": {"S": "ORG#org"}, "rq": {"N": str(now)}, "dd": {"S": "2026-01-01"}}

    def once() -> None:
        state = state_from_item(item)
        res = Reservation(100, 1000, lease_id("req-1"), now, now + 900 * NS)
        charge = plan_charge(org, state, res, fresh=False)
        assert isinstance(charge, Charge)
        charge_params("quotas", charge)
        views = limit_views(org, charged(state, charge), now)
        rate_limit_headers(views)
        warning_header(quota_warnings(views))
        refund_params("quotas", refund(hold_of(charge), 10, 100))
        settled = Settled("req-1", "key", "org", "m", "e", now / NS, 5, 5, 100, 100, 1000)
        ledger_put("usage", settled)
        counter_updates("usage", settled)

    started = time.thread_time()
    for _ in range(rounds):
        once()
    return (time.thread_time() - started) * 1000 / rounds


# --- DynamoDB's billing rules ---------------------------------------------------------------


def attribute_size(value: dict[str, Any]) -> int:
    """Bytes DynamoDB counts for one attribute value."""
    (kind, raw), *_ = value.items()
    if kind == "S":
        return len(str(raw).encode())
    if kind == "N":
        digits = Decimal(str(raw)).normalize().as_tuple().digits
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in raw.items())
    if kind == "L":
        return 3 + sum(attribute_size(v) + 1 for v in raw)
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: v}) for v in raw)
    raise ValueError(kind)


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


@dataclass
class Call:
    operation: str
    items: list[tuple[str, str, dict[str, Any]]]  # (table, kind, key)


@dataclass
class Costs:
    """Per warm request, measured over `requests` requests after a first one."""

    label: str
    requests: int
    cold_calls: int
    calls: list[Call] = field(default_factory=list)
    sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, pk) -> bytes
    reported_write_units: float = 0.0

    def per_request(self, operations: Iterable[str]) -> float:
        wanted = set(operations)
        return sum(1 for c in self.calls if c.operation in wanted) / self.requests

    @property
    def round_trips(self) -> float:
        return len(self.calls) / self.requests

    def _units(self, table: str, key: dict[str, Any], per_kb: int) -> int:
        size = self.sizes.get((table, json.dumps(key, sort_keys=True)), 0)
        if table.endswith("quotas"):
            size += LEASE_BYTES  # the lease the request held while it ran
        return max(1, math.ceil(size / per_kb))

    @property
    def write_units(self) -> float:
        total = 0
        for call in self.calls:
            factor = 2 if call.operation == "TransactWriteItems" else 1
            if call.operation in ("TransactWriteItems", "UpdateItem", "PutItem"):
                total += sum(factor * self._units(t, k, 1024) for t, _, k in call.items)
        return total / self.requests

    @property
    def read_units(self) -> float:
        total = 0
        for call in self.calls:
            if call.operation in ("GetItem", "BatchGetItem", "Query"):
                total += sum(self._units(t, k, 4096) for t, _, k in call.items)
        return total / self.requests

    @property
    def usd_per_million(self) -> float:
        return self.write_units * WRITE_PRICE + self.read_units * READ_PRICE

    @property
    def largest_item(self) -> int:
        return max(self.sizes.values(), default=0)


def _items(operation: str, params: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    if operation == "TransactWriteItems":
        found = []
        for entry in params["TransactItems"]:
            ((kind, body),) = entry.items()
            key = body.get("Key") or {k: body["Item"][k] for k in ("pk", "sk") if k in body["Item"]}
            found.append((body["TableName"], kind, key))
        return found
    if operation in ("UpdateItem", "GetItem", "DeleteItem"):
        return [(params["TableName"], operation, params["Key"])]
    if operation == "PutItem":
        item = params["Item"]
        return [(params["TableName"], operation, {k: item[k] for k in ("pk", "sk") if k in item})]
    return []


def measure_costs(requests: int = 200) -> list[Costs]:
    """Round trips and units per chat request with the echo model, warm: a key without
    limits of its own (its organization's item alone), and a key with its own limits (both
    items, in one transaction)."""
    import boto3
    from fastapi.testclient import TestClient

    from gantry.adapters.aws import client
    from gantry.domain.keys import KeyRecord, hash_secret, new_api_key
    from gantry.domain.orgs import Limits
    from gantry.http.app import create_app
    from gantry.local.moto_env import LOCAL_ORG

    bench_key = new_api_key()[0]
    stack = bench_stack(bench_key)
    runtime = stack.runtime
    narrowed, key_id, secret = new_api_key()
    runtime.key_store.put_key(
        KeyRecord(
            key_id=key_id,
            org_id=LOCAL_ORG,
            secret_hmac=hash_secret(runtime.pepper(), secret),
            scopes=frozenset({"completions:write"}),
            limits=Limits(requests_per_minute=10**8, tokens_per_day=10**11),
        )
    )
    dynamodb = client("dynamodb", runtime.settings)
    calls: list[Call] = []
    dynamodb.meta.events.register(
        "before-parameter-build.dynamodb.*",
        lambda model, params, **_: calls.append(Call(model.name, _items(model.name, params))),
    )
    reader = boto3.client(
        "dynamodb", endpoint_url=runtime.settings.aws_endpoint_url, region_name="us-east-1"
    )
    body = {"model": "gantry-echo", "messages": [{"role": "user", "content": "Hello there"}]}
    results = []
    try:
        with TestClient(create_app()) as test_client:
            for label, key in (
                ("key without own limits (organization item only)", bench_key),
                ("key with own limits (key and organization items)", narrowed),
            ):
                headers = {"Authorization": f"Bearer {key}"}
                calls.clear()
                meter = runtime.meter
                assert test_client.post("/v1/chat/completions", json=body, headers=headers)
                cold = len(calls)
                calls.clear()
                reported_before = getattr(getattr(meter, "stats", None), "write_units", 0.0)
                for _ in range(requests):
                    response = test_client.post("/v1/chat/completions", json=body, headers=headers)
                    assert response.status_code == 200, response.text
                costs = Costs(label, requests, cold, list(calls))
                costs.reported_write_units = (
                    getattr(getattr(meter, "stats", None), "write_units", 0.0) - reported_before
                ) / requests
                for call in costs.calls:
                    for table, _, item_key in call.items:
                        found = reader.get_item(TableName=table, Key=item_key).get("Item", {})
                        costs.sizes[(table, json.dumps(item_key, sort_keys=True))] = item_size(
                            found
                        )
                results.append(costs)
    finally:
        stack.aws.stop()
    return results


def phase(call: Call) -> str:
    if call.operation in ("GetItem", "BatchGetItem", "Query"):
        return "read"
    tables = {table for table, _, _ in call.items}
    if tables and all(table.endswith("quotas") for table in tables):
        return "admission"
    if any(table.endswith("usage") for table in tables):
        return "settlement"
    return "other"


def costs_section(costs: list[Costs]) -> str:
    rows = [
        "| caller | round trips | admission | settlement | other | write units "
        "| read units | DynamoDB $ / million requests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        count = {name: 0 for name in ("admission", "settlement", "read", "other")}
        for call in c.calls:
            count[phase(call)] += 1
        rows.append(
            f"| {c.label} | {c.round_trips:.2f} | {count['admission'] / c.requests:.2f} "
            f"| {count['settlement'] / c.requests:.2f} "
            f"| {(count['read'] + count['other']) / c.requests:.2f} | {c.write_units:.2f} "
            f"| {c.read_units:.2f} | {c.usd_per_million:.2f} |"
        )
    first = costs[0]
    reported = ", ".join(f"{c.reported_write_units:.2f}" for c in costs)
    return "\n".join(rows) + (
        f"\n\nFirst request of a process (key and organization not cached yet): "
        f"{first.cold_calls} DynamoDB calls. Largest item written: {first.largest_item} bytes "
        "(quota items also hold one small attribute per request in flight). Write units "
        "follow DynamoDB's billing rules from the sizes of the items written (1 unit per "
        "started KB, twice that inside a transaction). The meter asks for "
        "`ReturnConsumedCapacity=TOTAL` and sums what the responses report "
        f"(`DynamoMeter.stats`): here {reported} per request, because the local emulator "
        "reports no capacity for transactions; in AWS that sum is the billed figure."
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default=os.environ.get("GANTRY_DEV_API_KEY", ""))
    parser.add_argument("--dynamodb", help="endpoint URL of the DynamoDB to use")
    parser.add_argument("--serve-dynamodb", action="store_true", help="serve the emulator")
    args = parser.parse_args()
    if args.serve_dynamodb:
        serve_dynamodb(args.port)
    else:
        serve(args.port, args.key, args.dynamodb)


if __name__ == "__main__":
    main()
