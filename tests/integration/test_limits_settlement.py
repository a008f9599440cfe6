"""Settlement: idempotent by request id, and never lost or doubled when writes fail."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from gantry.adapters.aws import client
from gantry.adapters.dynamodb_meter import DynamoMeter
from gantry.adapters.sqs_queue import SqsQueue
from gantry.domain.metering import Actual, Admission, Estimate
from gantry.domain.orgs import Limits
from gantry.lambda_workers import settlements
from gantry.local.invoke import LocalContext
from gantry.runtime import Runtime
from tests.conftest import FakeClock
from tests.integration.test_limits import Caller, admit, new_key, new_org, race


class FlakySettlements:
    """A DynamoDB client whose settlement transactions fail: `first` fails each request's
    first attempt (alternately before the write reaches the store and after it was applied,
    with the answer lost); `broken` fails every attempt until cleared."""

    def __init__(self, real: Any, first: bool = True) -> None:
        self._real = real
        self.first = first
        self.broken = False
        self.failed: set[str] = set()
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def transact_write_items(self, **params: Any) -> Any:
        put = params["TransactItems"][0].get("Put", {})
        pk = put.get("Item", {}).get("pk", {}).get("S", "")
        if not pk.startswith("REQ#"):
            return self._real.transact_write_items(**params)
        with self._lock:
            fail = self.broken or (self.first and pk not in self.failed)
            self.failed.add(pk)
            after = next(self._turn) % 2 == 1
        if not fail:
            return self._real.transact_write_items(**params)
        if after and not self.broken:
            self._real.transact_write_items(**params)
            raise ReadTimeoutError(endpoint_url="http://dynamodb")
        raise EndpointConnectionError(endpoint_url="http://dynamodb")


def flaky_meter(
    runtime: Runtime,
    clock: FakeClock,
    flaky: FlakySettlements,
    spool: SqsQueue | None = None,
    max_attempts: int = 4,
) -> DynamoMeter:
    return DynamoMeter(
        flaky,  # type: ignore[arg-type]
        quotas_table=runtime.settings.quotas_table,
        usage_table=runtime.settings.usage_table,
        limits=runtime.limits,
        clock=clock,
        max_attempts=max_attempts,
        sleep=lambda _: None,
        spool=spool,
    )


def scan(runtime: Runtime, prefix: str, key_id: str) -> list[dict[str, Any]]:
    dynamodb = client("dynamodb", runtime.settings)
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {
        "TableName": runtime.settings.usage_table,
        "FilterExpression": "begins_with(pk, :p) AND key_id = :k",
        "ExpressionAttributeValues": {":p": {"S": prefix}, ":k": {"S": key_id}},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.scan(**params)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def sums(items: list[dict[str, Any]]) -> tuple[int, int, int, int]:
    def total(name: str) -> int:
        return sum(int(item.get(name, {"N": "0"})["N"]) for item in items)

    requests = sum(int(item["requests"]["N"]) if "requests" in item else 1 for item in items)
    return requests, total("prompt_tokens"), total("completion_tokens"), total("cost_nano")


def assert_counters_match_ledger(runtime: Runtime, caller: Caller, expected: int) -> None:
    ledger = scan(runtime, "REQ#", caller.record.key_id)
    assert len(ledger) == expected
    assert len({item["request_id"]["S"] for item in ledger}) == expected
    key_counters = scan(runtime, f"KEY#{caller.record.key_id}", caller.record.key_id)
    org_counters = scan(runtime, f"ORG#{caller.record.org_id}", caller.record.key_id)
    assert sums(key_counters) == sums(ledger)
    assert sums(org_counters) == sums(ledger)


def usage_of(i: int) -> Actual:
    return Actual(prompt_tokens=5 + i % 3, completion_tokens=i % 7, cost_usd=1e-6 * (i + 1))


def test_settling_twice_records_once(runtime: Runtime) -> None:
    org_id = new_org(runtime, tokens_per_day=10_000)
    caller = new_key(runtime, org_id)
    meter = runtime.meter
    admission = admit(meter, runtime, caller, tokens=50, cost=0.001)
    meter.settle(admission, Actual(10, 5, 0.0001))
    meter.settle(admission, Actual(10, 5, 0.0001))
    assert_counters_match_ledger(runtime, caller, 1)
    state = runtime.usage.quota_states([f"ORG#{org_id}"])[f"ORG#{org_id}"]
    assert state.day_tokens == 15  # refunded once, not twice
    assert state.leases_held == 0


def test_every_request_settles_exactly_once_when_first_attempts_fail(
    runtime: Runtime, clock: FakeClock
) -> None:
    org_id = new_org(runtime, tokens_per_day=1_000_000, monthly_budget_usd=100.0)
    caller = new_key(runtime, org_id, limits=Limits(tokens_per_day=500_000))
    flaky = FlakySettlements(client("dynamodb", runtime.settings))
    meter = flaky_meter(runtime, clock, flaky)

    def work(i: int) -> Admission:
        admission = admit(meter, runtime, caller, tokens=40, cost=0.001)
        meter.settle(admission, usage_of(i))
        return admission

    results = race(40, work, workers=8)
    assert all(isinstance(r, Admission) for r in results)
    assert len(flaky.failed) == 40  # every settlement failed once
    assert meter.pending == 0
    assert_counters_match_ledger(runtime, caller, 40)
    expected_tokens = sum(usage_of(i).total_tokens for i in range(40))
    states = runtime.usage.quota_states([f"KEY#{caller.record.key_id}", f"ORG#{org_id}"])
    for state in states.values():
        assert state.day_tokens == expected_tokens
        assert state.leases_held == 0


def test_settlements_wait_in_a_queue_through_an_outage(
    runtime: Runtime, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    org_id = new_org(runtime, tokens_per_day=1_000_000)
    caller = new_key(runtime, org_id)
    flaky = FlakySettlements(client("dynamodb", runtime.settings), first=False)
    meter = flaky_meter(runtime, clock, flaky)
    flaky.broken = True
    admissions = [admit(meter, runtime, caller, tokens=20) for _ in range(5)]
    with caplog.at_level("ERROR", logger="gantry.metering"):
        for i, admission in enumerate(admissions):
            meter.settle(admission, usage_of(i))  # never raises: queued instead
    assert meter.pending == 5
    assert "queued for retry" in caplog.text
    assert f"request_id={admissions[0].request_id}" in caplog.text
    assert scan(runtime, "REQ#", caller.record.key_id) == []  # nothing written yet
    flaky.broken = False
    late = admit(meter, runtime, caller, tokens=20)
    meter.settle(late, usage_of(5))  # the next request drains the queue
    assert meter.pending == 0
    assert_counters_match_ledger(runtime, caller, 6)
    state = runtime.usage.quota_states([f"ORG#{org_id}"])[f"ORG#{org_id}"]
    assert state.day_tokens == sum(usage_of(i).total_tokens for i in range(6))
    assert state.leases_held == 0


def test_release_writes_no_ledger_and_is_idempotent(runtime: Runtime) -> None:
    org_id = new_org(runtime, tokens_per_day=1000)
    caller = new_key(runtime, org_id)
    meter = runtime.meter
    admission = admit(meter, runtime, caller, tokens=300)
    meter.release(admission)
    meter.release(admission)
    state = runtime.usage.quota_states([f"ORG#{org_id}"])[f"ORG#{org_id}"]
    assert state.day_tokens == 0 and state.leases_held == 0
    assert scan(runtime, "REQ#", caller.record.key_id) == []


def spool_queue(runtime: Runtime) -> SqsQueue:
    sqs = client("sqs", runtime.settings)
    url = sqs.create_queue(QueueName=f"settlements-{secrets.token_hex(4)}")["QueueUrl"]
    return SqsQueue(sqs, url, "settlements")


def spooled_event(queue: SqsQueue) -> dict[str, Any]:
    messages = queue.receive(0, 30, 10)
    return {
        "Records": [
            {"messageId": f"m{i}", "receiptHandle": m.receipt, "body": json.dumps(m.body)}
            for i, m in enumerate(messages)
        ]
    }


def test_settlements_outlive_their_process_in_the_settlement_queue(
    runtime: Runtime, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    org_id = new_org(runtime, tokens_per_day=1_000_000)
    caller = new_key(runtime, org_id, limits=Limits(tokens_per_day=500_000))
    queue = spool_queue(runtime)
    flaky = FlakySettlements(client("dynamodb", runtime.settings), first=False)
    meter = flaky_meter(runtime, clock, flaky, spool=queue, max_attempts=2)
    flaky.broken = True
    admissions = [admit(meter, runtime, caller, tokens=30) for _ in range(5)]
    with caplog.at_level("WARNING", logger="gantry.metering"):
        for i, admission in enumerate(admissions):
            meter.settle(admission, usage_of(i))
    assert meter.pending == 0  # nothing waits in this process's memory
    assert "spooled for replay" in caplog.text
    assert scan(runtime, "REQ#", caller.record.key_id) == []
    del meter  # the process that admitted them is gone

    event = spooled_event(queue)
    assert len(event["Records"]) == 5
    context = LocalContext("gantry-settlement_worker", remaining_millis=60_000)
    assert settlements(event, context) == {"batchItemFailures": []}
    assert settlements(event, context) == {"batchItemFailures": []}  # delivered twice
    assert_counters_match_ledger(runtime, caller, 5)
    expected = sum(usage_of(i).total_tokens for i in range(5))
    states = runtime.usage.quota_states([f"KEY#{caller.record.key_id}", f"ORG#{org_id}"])
    for state in states.values():
        assert state.day_tokens == expected  # each reservation refunded once
        assert state.leases_held == 0


def test_a_spooled_settlement_that_still_fails_stays_on_the_queue(
    runtime: Runtime, clock: FakeClock
) -> None:
    org_id = new_org(runtime, tokens_per_day=1_000_000)
    caller = new_key(runtime, org_id)
    queue = spool_queue(runtime)
    flaky = FlakySettlements(client("dynamodb", runtime.settings), first=False)
    flaky.broken = True
    broken = flaky_meter(runtime, clock, flaky, spool=queue, max_attempts=2)
    broken.settle(admit(broken, runtime, caller, tokens=30), usage_of(0))
    runtime.__dict__["meter"] = broken  # the outage is not over
    event = spooled_event(queue)
    context = LocalContext("gantry-settlement_worker", remaining_millis=60_000)
    assert settlements(event, context) == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert scan(runtime, "REQ#", caller.record.key_id) == []


def test_two_admissions_of_one_request_id_hold_and_free_their_own_leases(
    runtime: Runtime,
) -> None:
    org_id = new_org(runtime, tokens_per_day=1_000_000, concurrent_requests=2)
    caller = new_key(runtime, org_id)
    meter = runtime.meter
    model = runtime.registry.get("gantry-small")

    def admit_line() -> Admission:
        return meter.admit("batch_req_same_1", caller.principal, "chat", model, Estimate(20, 0.0))

    crashed = admit_line()  # a worker died mid-line and never settled ...
    rerun = admit_line()  # ... and the line ran again under the same request id
    meter.settle(rerun, Actual(5, 5, 0.0))
    meter.release(crashed)  # the first run's reservation expires or is given back
    state = runtime.usage.quota_states([f"ORG#{org_id}"])[f"ORG#{org_id}"]
    assert state.leases_held == 0
    assert state.day_tokens == 10
    assert_counters_match_ledger(runtime, caller, 1)
