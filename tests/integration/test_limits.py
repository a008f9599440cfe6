"""The DynamoDB meter under concurrency, against the moto server (which, unlike in-process
mocks, applies one request at a time, as DynamoDB applies conditional writes atomically)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from gantry.adapters.aws import client
from gantry.adapters.dynamodb_meter import DynamoMeter
from gantry.domain.errors import GantryError, RateLimited
from gantry.domain.keys import KeyRecord, Principal, hash_secret, new_api_key
from gantry.domain.limits import CONCURRENT, RPM, TPD
from gantry.domain.metering import Actual, Admission, Estimate, Meter, Unmetered
from gantry.domain.orgs import Limits, Organization
from gantry.runtime import Runtime
from tests.conftest import FakeClock


@dataclass
class Caller:
    full_key: str
    record: KeyRecord

    @property
    def principal(self) -> Principal:
        return Principal(self.record.key_id, self.record.org_id, self.record.scopes)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.full_key}"}


def new_org(runtime: Runtime, tier: str = "enterprise", **limits: float) -> str:
    org_id = f"org-{uuid.uuid4().hex[:10]}"
    runtime.key_store.put_org(
        Organization(org_id, name="limits test", tier=tier, limits=Limits(**limits))  # type: ignore[arg-type]
    )
    return org_id


def new_key(
    runtime: Runtime,
    org_id: str,
    scopes: tuple[str, ...] = ("admin:full",),
    limits: Limits | None = None,
) -> Caller:
    full, key_id, secret = new_api_key()
    record = KeyRecord(
        key_id=key_id,
        org_id=org_id,
        secret_hmac=hash_secret(runtime.pepper(), secret),
        scopes=frozenset(scopes),
        name="limits test",
        created_at=time.time(),
        created_by="tests",
        limits=limits,
    )
    runtime.key_store.put_key(record)
    return Caller(full, record)


def admit(
    meter: Meter, runtime: Runtime, caller: Caller, tokens: int = 10, cost: float = 0.0
) -> Admission:
    return meter.admit(
        f"req-{uuid.uuid4().hex}",
        caller.principal,
        "chat.completions",
        runtime.registry.get("gantry-small"),
        Estimate(tokens, cost),
    )


def race(count: int, work: Callable[[int], object], workers: int | None = None) -> list[object]:
    """Run `work(i)` for every i on `count` threads released together; exceptions returned."""
    barrier = threading.Barrier(workers or count)

    def run(i: int) -> object:
        if i < (workers or count):
            barrier.wait()
        try:
            return work(i)
        except GantryError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers or count) as pool:
        return list(pool.map(run, range(count)))


def test_metering_is_on_by_default_and_can_be_switched_off(runtime: Runtime) -> None:
    assert isinstance(runtime.meter, DynamoMeter)
    assert runtime.meter.inline is False
    off = Runtime(runtime.settings.model_copy(update={"metering": "off"}), clock=runtime.clock)
    assert isinstance(off.meter, Unmetered)


def test_300_concurrent_requests_admit_exactly_the_burst(runtime: Runtime) -> None:
    org_id = new_org(runtime)
    caller = new_key(runtime, org_id, limits=Limits(requests_per_minute=100, request_burst=100))
    meter = runtime.meter
    results = race(300, lambda _: admit(meter, runtime, caller))
    admitted = [r for r in results if isinstance(r, Admission)]
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(admitted) == 100
    assert len(refused) == 200
    for error in refused:
        assert error.details is not None
        assert error.details["dimension"] == RPM and error.details["scope"] == "key"
        assert error.details["limit"] == 100 and error.details["used"] == 100
        assert error.retry_after == pytest.approx(0.6)  # one request refills in 60 s / 100
    pk = f"KEY#{caller.record.key_id}"
    assert runtime.usage.quota_states([pk])[pk].leases_held == 100  # each admission's lease
    race(100, lambda i: meter.release(admitted[i]), workers=16)  # type: ignore[arg-type]
    state = runtime.usage.quota_states([pk])[pk]
    assert state.leases_held == 0 and not state.leases


def test_tokens_per_day_never_exceeded_while_requests_settle(
    runtime: Runtime, clock: FakeClock
) -> None:
    org_id = new_org(runtime)
    caller = new_key(runtime, org_id, limits=Limits(tokens_per_day=1000))
    meter = runtime.meter
    pk = f"KEY#{caller.record.key_id}"
    over: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            used = runtime.usage.quota_states([pk])[pk].day_tokens
            if used > 1000:
                over.append(used)

    def work(i: int) -> int:
        admitted = 0
        for _ in range(12):
            try:
                admission = admit(meter, runtime, caller, tokens=30)
            except RateLimited as exc:
                assert exc.details is not None and exc.details["dimension"] == TPD
                continue
            meter.settle(admission, Actual(4, 6, 0.0))  # 30 reserved, 10 used
            admitted += 1
        return admitted

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        counts = race(16, work)
    finally:
        stop.set()
        watcher.join()
    admitted = sum(c for c in counts if isinstance(c, int))
    assert over == []
    state = runtime.usage.quota_states([pk])[pk]
    assert state.day_tokens == 10 * admitted
    assert 10 * (admitted - 1) + 30 <= 1000  # the last admission still had 30 tokens free
    assert admitted >= 90  # refunds made room for more than 1000 / 30 requests
    assert state.leases_held == 0


def test_concurrent_leases_never_exceed_the_limit(runtime: Runtime) -> None:
    org_id = new_org(runtime)
    caller = new_key(runtime, org_id, limits=Limits(concurrent_requests=3))
    meter = runtime.meter
    held = 0
    peak = 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal held, peak
        done = 0
        for _ in range(6):
            try:
                admission = admit(meter, runtime, caller)
            except RateLimited as exc:
                assert exc.details is not None and exc.details["dimension"] == CONCURRENT
                assert exc.retry_after == 1.0
                continue
            with lock:
                held += 1
                peak = max(peak, held)
            time.sleep(0.005)
            with lock:
                held -= 1
            meter.settle(admission, Actual(5, 5, 0.0))
            done += 1
        return done

    counts = race(12, work)
    assert peak <= 3
    assert sum(c for c in counts if isinstance(c, int)) >= 3
    pk = f"KEY#{caller.record.key_id}"
    state = runtime.usage.quota_states([pk])[pk]
    assert state.leases_held == 0 and not state.leases


def test_expired_leases_free_their_slot(runtime: Runtime, clock: FakeClock) -> None:
    org_id = new_org(runtime)
    caller = new_key(runtime, org_id, limits=Limits(concurrent_requests=2))
    meter = DynamoMeter(
        client("dynamodb", runtime.settings),
        quotas_table=runtime.settings.quotas_table,
        usage_table=runtime.settings.usage_table,
        limits=runtime.limits,
        clock=clock,
        lease_seconds=30,
    )
    results = race(10, lambda _: admit(meter, runtime, caller))
    assert sum(isinstance(r, Admission) for r in results) == 2  # and never settled: "died"
    with pytest.raises(RateLimited):
        admit(meter, runtime, caller)
    clock.advance(31)
    results = race(10, lambda _: admit(meter, runtime, caller))
    fresh = [r for r in results if isinstance(r, Admission)]
    assert len(fresh) == 2
    pk = f"KEY#{caller.record.key_id}"
    state = runtime.usage.quota_states([pk])[pk]
    assert state.leases_held == 2
    assert set(state.leases) == {a.token.holds[0].lease_id for a in fresh}  # type: ignore[attr-defined]
    for admission in fresh:
        meter.release(admission)
    state = runtime.usage.quota_states([pk])[pk]
    assert state.leases_held == 0


def test_key_and_organization_are_admitted_atomically(runtime: Runtime) -> None:
    """The organization's item refuses: the key's item must not keep a reservation."""
    org_id = new_org(runtime, tokens_per_day=100)
    caller = new_key(runtime, org_id, limits=Limits(tokens_per_day=90, concurrent_requests=5))
    meter = runtime.meter
    first = admit(meter, runtime, caller, tokens=60)
    other = new_key(runtime, org_id)
    with pytest.raises(RateLimited) as caught:
        admit(meter, runtime, other, tokens=50)
    assert caught.value.details is not None
    assert caught.value.details["scope"] == "organization"
    meter.release(first)
    states = runtime.usage.quota_states([f"KEY#{caller.record.key_id}", f"ORG#{org_id}"])
    assert [s.day_tokens for s in states.values()] == [0, 0]
    assert [s.leases_held for s in states.values()] == [0, 0]
