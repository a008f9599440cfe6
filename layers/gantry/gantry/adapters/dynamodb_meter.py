"""The DynamoDB meter: admission is one conditional write, settlement one transaction.

Admission writes the caller's organization item, plus the key's item when the key has
limits tighter than its organization's: a single UpdateItem (returning the new item, so the
rate-limit headers are exact), or a TransactWriteItems over both. Each item's condition
encodes every dimension it enforces, so the store never admits beyond a limit however many
requests race; a failed condition returns the item (ALL_OLD) and admission plans again from
it, or refuses.

Settlement is one TransactWriteItems: the ledger item (which exists only once per request
id), the key's and the organization's hourly counters, and the refund of whatever was
reserved beyond the real usage on each quota item, lease included. Transient failures are
retried with jittered backoff; a settlement that still fails waits in an in-process queue,
drained by the next requests, and is logged with everything needed to replay it.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from gantry.adapters.dynamodb_quotas import charge_params, refund_params, state_from_item
from gantry.adapters.dynamodb_usage import Settled, counter_updates, event_put, ledger_put
from gantry.adapters.metering_spool import RELEASE, SETTLEMENT, Ticket, from_message, to_message
from gantry.domain.errors import ServiceUnavailable
from gantry.domain.keys import Principal
from gantry.domain.limits import (
    Charge,
    Clock,
    LimitResolver,
    QuotaState,
    Refund,
    Refusal,
    Reservation,
    charged,
    hold_of,
    lease_id,
    limit_views,
    nano_usd,
    plan_charge,
    rate_limit_headers,
    refund,
    refund_for,
    refunded,
    to_ns,
    usd,
)
from gantry.domain.metering import Actual, Admission, Estimate
from gantry.domain.registry import ModelSpec
from gantry.domain.usage import quota_warnings, warning_header
from gantry.job_ports import MessageQueue

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = logging.getLogger("gantry.metering")

_RETRY_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
_TRANSIENT_CODES = {
    "InternalServerError",
    "ServiceUnavailable",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
}
_WRITES = {"UpdateItem", "PutItem", "TransactWriteItems"}


@dataclass
class MeterStats:
    """DynamoDB calls made by the meter and the capacity their responses reported."""

    calls: int = 0
    write_units: float = 0.0
    read_units: float = 0.0
    by_operation: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, operation: str, response: Mapping[str, Any] | None) -> None:
        consumed: Any = (response or {}).get("ConsumedCapacity") or []
        units = sum(
            float(c.get("CapacityUnits", 0.0))
            for c in (consumed if isinstance(consumed, list) else [consumed])
        )
        with self._lock:
            self.calls += 1
            self.by_operation[operation] = self.by_operation.get(operation, 0) + 1
            if operation in _WRITES:
                self.write_units += units
            else:
                self.read_units += units


class _Refused(Exception):
    """A conditional write was refused: `states` are the current items of the quota items
    whose condition failed, `failed` the indexes of the failed writes."""

    def __init__(
        self,
        states: dict[str, QuotaState],
        failed: frozenset[int],
        retry: bool,
        items: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__("conditional write refused")
        self.states = states
        self.failed = failed
        self.retry = retry
        self.items = dict(items or {})  # index -> the item a refused write found


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _transient(exc: Exception) -> bool:
    if isinstance(exc, BotoCoreError):
        return True
    return isinstance(exc, ClientError) and _code(exc) in _TRANSIENT_CODES


@dataclass
class _Job:
    """A settlement or release that could not be written yet."""

    kind: str
    admission: Admission
    run: Callable[[int], None]
    at: float
    actual: Actual | None = None
    failures: int = 0

    def describe(self) -> str:
        text = _describe(self.admission)
        if self.actual is not None:
            text += (
                f" prompt_tokens={self.actual.prompt_tokens}"
                f" completion_tokens={self.actual.completion_tokens}"
                f" cost_usd={self.actual.cost_usd:.9f}"
            )
        return text


class DynamoMeter:
    inline = False  # admission and settlement are network calls

    def __init__(
        self,
        client: DynamoDBClient,
        *,
        quotas_table: str,
        usage_table: str,
        limits: LimitResolver,
        clock: Clock,
        lease_seconds: float = 900.0,
        max_attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        max_pending: int = 10_000,
        max_job_failures: int = 50,
        spool: MessageQueue | None = None,
    ) -> None:
        self._client = client
        self._quotas = quotas_table
        self._usage = usage_table
        self._limits = limits
        self._clock = clock
        self._lease_ns = to_ns(lease_seconds)
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._max_pending = max_pending
        self._max_job_failures = max_job_failures
        self._spool = spool
        self._states: dict[str, QuotaState] = {}
        self._lock = threading.Lock()
        self._pending: deque[_Job] = deque()
        self._emitted: set[tuple[str, ...]] = set()
        self.stats = MeterStats()

    # --- the Meter protocol --------------------------------------------------------------

    def admit(
        self,
        request_id: str,
        principal: Principal,
        endpoint: str,
        model: ModelSpec,
        estimate: Estimate,
    ) -> Admission:
        request_id = request_id or f"req-{secrets.token_hex(12)}"
        admission_id = secrets.token_hex(8)
        org, key = self._limits.scopes(principal)
        scopes = [scope for scope in (key, org) if scope.tracked]
        now = to_ns(self._clock.now())
        res = Reservation(
            tokens=max(0, estimate.tokens),
            cost=nano_usd(max(0.0, estimate.cost_usd), round_up=True),
            # One lease per admission: two admissions of one request id (a batch line run
            # again) must not share the lease slot one of them would release.
            lease_id=lease_id(admission_id),
            now=now,
            lease_expiry=now + self._lease_ns,
        )
        fresh: set[str] = set()
        for attempt in range(self._max_attempts if scopes else 0):
            bases = {scope.pk: self._state(scope.pk) for scope in scopes}
            charges: list[Charge] = []
            for scope in scopes:
                planned = plan_charge(scope, bases[scope.pk], res, fresh=scope.pk in fresh)
                if isinstance(planned, Refusal):
                    raise planned.error()
                charges.append(planned)
            try:
                exact = self._write_charges(charges)
            except _Refused as refused:
                self._remember(refused.states)
                fresh.update(refused.states)
                if refused.retry or not refused.states:
                    self._backoff(attempt)
                continue
            after = {
                c.limits.pk: exact.get(c.limits.pk) or charged(bases[c.limits.pk], c)
                for c in charges
            }
            self._remember(after)
            views = [v for c in charges for v in limit_views(c.limits, after[c.limits.pk], now)]
            warnings = quota_warnings(views)
            headers = rate_limit_headers(views)
            warning = warning_header(warnings)
            if warning:
                headers["x-quota-warning"] = warning
            ticket = Ticket(
                tuple(hold_of(c) for c in charges),
                tuple(warnings),
                principal.org_id,
                res.tokens,
                res.cost,
                admission_id,
            )
            return Admission(request_id, principal, endpoint, model, estimate, headers, ticket)
        if scopes:
            raise ServiceUnavailable(
                "The limits store is too busy to admit this request; retry shortly.",
                details={"subsystem": "database"},
                retry_after=1,
            )
        ticket = Ticket((), (), principal.org_id, res.tokens, res.cost, admission_id)
        return Admission(request_id, principal, endpoint, model, estimate, {}, ticket)

    def settle(self, admission: Admission, actual: Actual) -> None:
        at = self._clock.now()

        def run(attempts: int) -> None:
            self._settle(admission, actual, at, attempts)

        if self._run(_Job(SETTLEMENT, admission, run, at, actual)):
            self.drain()

    def release(self, admission: Admission) -> None:
        def run(attempts: int) -> None:
            self._release(admission, attempts)

        if self._run(_Job(RELEASE, admission, run, self._clock.now())):
            self.drain()

    def replay(self, message: Mapping[str, Any]) -> None:
        """Write a spooled settlement or release; raises if it still cannot be written."""
        spooled = from_message(message)
        if spooled.kind == SETTLEMENT and spooled.actual is not None:
            self._settle(spooled.admission, spooled.actual, spooled.at, self._max_attempts)
        elif spooled.kind == RELEASE:
            self._release(spooled.admission, self._max_attempts)
        else:
            raise ValueError(f"not a spooled settlement or release: {spooled.kind!r}")

    # --- pending work --------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    def drain(self, limit: int = 8) -> int:
        """Retry up to `limit` queued settlements and releases; returns how many succeeded."""
        done = 0
        for _ in range(min(limit, len(self._pending))):
            try:
                job = self._pending.popleft()
            except IndexError:
                break
            try:
                job.run(2)
            except Exception:
                job.failures += 1
                if job.failures < self._max_job_failures:
                    self._pending.append(job)
                elif not self._spooled(job):
                    logger.critical(
                        "metering %s dropped after %d attempts: %s",
                        job.kind,
                        job.failures,
                        job.describe(),
                    )
            else:
                done += 1
        return done

    def _run(self, job: _Job) -> bool:
        """Run the job now, or spool (or else queue) it if it fails; True when written."""
        try:
            job.run(self._max_attempts)
            return True
        except Exception:
            if self._spooled(job):
                return False
            if len(self._pending) >= self._max_pending:
                logger.critical("metering %s lost (queue full): %s", job.kind, job.describe())
                return False
            logger.error(
                "metering %s failed; queued for retry: %s",
                job.kind,
                job.describe(),
                exc_info=True,
            )
            self._pending.append(job)
            return False

    def _spooled(self, job: _Job) -> bool:
        """Hand the job to the settlement queue, where it outlives this process; False
        when there is no queue or it cannot be reached either."""
        if self._spool is None:
            return False
        message = to_message(
            job.kind, job.admission, self._ticket(job.admission), job.actual, job.at
        )
        try:
            self._spool.send(message)
        except Exception:
            logger.error("could not spool metering %s: %s", job.kind, job.describe(), exc_info=True)
            return False
        logger.warning("metering %s spooled for replay: %s", job.kind, job.describe())
        return True

    # --- settlement and release ----------------------------------------------------------

    def _ticket(self, admission: Admission) -> Ticket:
        token = admission.token
        return token if isinstance(token, Ticket) else Ticket((), (), admission.principal.org_id)

    def _settle(self, admission: Admission, actual: Actual, at: float, attempts: int) -> None:
        ticket = self._ticket(admission)
        principal = admission.principal
        cost = nano_usd(actual.cost_usd)
        refunds = {h.pk: refund(h, actual.total_tokens, cost) for h in ticket.holds}
        settled = Settled(
            request_id=admission.request_id,
            key_id=principal.key_id,
            org_id=principal.org_id,
            model=admission.model.id,
            endpoint=admission.endpoint,
            at=at,
            prompt_tokens=actual.prompt_tokens,
            completion_tokens=actual.completion_tokens,
            cost_nano=cost,
            reserved_tokens=ticket.tokens,
            reserved_cost_nano=ticket.cost,
            cached_tokens=actual.cached_tokens,
            admission_id=ticket.id,
        )
        fixed: list[dict[str, Any]] = [{"Put": ledger_put(self._usage, settled)}]
        fixed += [{"Update": update} for update in counter_updates(self._usage, settled)]
        for attempt in range(attempts):
            items = list(fixed)
            pks: list[str | None] = [None] * len(fixed)
            for pk, refund_ in refunds.items():
                params = refund_params(self._quotas, refund_)
                if params is not None:
                    items.append({"Update": {**params, **_ALL_OLD}})
                    pks.append(pk)
            try:
                self._transact(items, pks)
            except _Refused as refused:
                if 0 in refused.failed:
                    # The ledger item exists. If this admission wrote it (an earlier attempt
                    # landed unseen), the settlement is done. If another admission of the
                    # same request id did (a retried batch line), this one's reservation
                    # goes back whole.
                    writer = refused.items.get(0, {}).get("admission", {}).get("S")
                    if writer and writer != ticket.id:
                        self._release(admission, attempts)
                    return
                self._narrow(refunds, refused.states)
                if refused.retry or not refused.states:
                    self._backoff(attempt)
                continue
            except (BotoCoreError, ClientError) as exc:
                if not _transient(exc) or attempt == attempts - 1:
                    raise
                self._backoff(attempt)
                continue
            self._apply_refunds(refunds)
            self._emit(ticket, at)
            return
        raise RuntimeError(f"settlement of {admission.request_id} did not complete")

    def _release(self, admission: Admission, attempts: int) -> None:
        refunds = {h.pk: refund(h, 0, 0, release=True) for h in self._ticket(admission).holds}
        for attempt in range(attempts):
            writes = [
                (pk, params)
                for pk, refund_ in refunds.items()
                if (params := refund_params(self._quotas, refund_)) is not None
            ]
            if not writes:
                return
            try:
                if len(writes) == 1:
                    pk, params = writes[0]
                    self._update_one(params, pk, return_new=False)
                else:
                    self._transact(
                        [{"Update": {**params, **_ALL_OLD}} for _, params in writes],
                        [pk for pk, _ in writes],
                    )
            except _Refused as refused:
                self._narrow(refunds, refused.states)
                if refused.retry or not refused.states:
                    self._backoff(attempt)
                continue
            except (BotoCoreError, ClientError) as exc:
                if not _transient(exc) or attempt == attempts - 1:
                    raise
                self._backoff(attempt)
                continue
            self._apply_refunds(refunds)
            return
        raise RuntimeError(f"release of {admission.request_id} did not complete")

    def _narrow(self, refunds: dict[str, Refund], states: Mapping[str, QuotaState]) -> None:
        """Drop from the refunds what no longer applies to the items as they now are."""
        self._remember(states)
        for pk, state in states.items():
            if pk not in refunds:
                continue
            narrowed = refund_for(refunds[pk], state)
            if narrowed is None:
                del refunds[pk]
            else:
                refunds[pk] = narrowed

    def _apply_refunds(self, refunds: Mapping[str, Refund]) -> None:
        with self._lock:
            for pk, refund_ in refunds.items():
                state = self._states.get(pk)
                if state is not None:
                    self._states[pk] = refunded(state, refund_)

    def _emit(self, ticket: Ticket, at: float) -> None:
        """Record each quota threshold crossing once per period (the store's condition makes
        it once across processes; the marker set saves the write within one)."""
        for warning in ticket.warnings:
            for threshold in warning.thresholds:
                marker = (
                    warning.scope,
                    warning.scope_id,
                    warning.dimension,
                    warning.period,
                    str(threshold),
                )
                with self._lock:
                    if marker in self._emitted:
                        continue
                    if len(self._emitted) > 10_000:
                        self._emitted.clear()
                    self._emitted.add(marker)
                params = event_put(self._usage, warning, threshold, ticket.org_id, at)
                try:
                    response = self._client.put_item(**params, ReturnConsumedCapacity="TOTAL")
                    self.stats.record("PutItem", response)
                except ClientError as exc:
                    self.stats.record("PutItem", None)
                    if _code(exc) != "ConditionalCheckFailedException":
                        self._forget_marker(marker)
                        logger.warning("could not record a quota event", exc_info=True)
                except BotoCoreError:
                    self._forget_marker(marker)
                    logger.warning("could not record a quota event", exc_info=True)

    def _forget_marker(self, marker: tuple[str, ...]) -> None:
        with self._lock:
            self._emitted.discard(marker)

    # --- state cache ---------------------------------------------------------------------

    def _state(self, pk: str) -> QuotaState:
        return self._states.get(pk) or QuotaState()

    def _remember(self, states: Mapping[str, QuotaState]) -> None:
        with self._lock:
            self._states.update(states)

    # --- DynamoDB calls ------------------------------------------------------------------

    def _write_charges(self, charges: list[Charge]) -> dict[str, QuotaState]:
        """Apply the charges; the new items when the store returns them (one item)."""
        params = [charge_params(self._quotas, c) for c in charges]
        pks: list[str | None] = [c.limits.pk for c in charges]
        try:
            if len(params) == 1:
                return self._update_one(params[0], charges[0].limits.pk, return_new=True)
            self._transact([{"Update": {**p, **_ALL_OLD}} for p in params], pks)
            return {}
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(
                "The limits store is unavailable; retry shortly.",
                details={"subsystem": "database"},
                retry_after=1,
            ) from exc

    def _update_one(
        self, params: dict[str, Any], pk: str, *, return_new: bool
    ) -> dict[str, QuotaState]:
        try:
            response = self._client.update_item(
                **params,
                ReturnValues="ALL_NEW" if return_new else "NONE",
                ReturnConsumedCapacity="TOTAL",
                **_ALL_OLD,
            )
        except ClientError as exc:
            self.stats.record("UpdateItem", None)
            if _code(exc) == "ConditionalCheckFailedException":
                item: Any = exc.response.get("Item")  # type: ignore[typeddict-item]
                raise _Refused({pk: state_from_item(item)}, frozenset({0}), False) from exc
            if _code(exc) in _TRANSIENT_CODES:
                raise _Refused({}, frozenset(), True) from exc
            raise
        self.stats.record("UpdateItem", response)
        if not return_new:
            return {}
        return {pk: state_from_item(response.get("Attributes"))}

    def _transact(self, items: list[dict[str, Any]], pks: list[str | None]) -> None:
        """One TransactWriteItems; `pks[i]` names the quota item written by `items[i]`."""
        try:
            response = self._client.transact_write_items(
                TransactItems=items,  # type: ignore[arg-type]
                ReturnConsumedCapacity="TOTAL",
            )
        except ClientError as exc:
            self.stats.record("TransactWriteItems", None)
            if _code(exc) != "TransactionCanceledException":
                if _code(exc) in _TRANSIENT_CODES:
                    raise _Refused({}, frozenset(), True) from exc
                raise
            reasons: list[Any] = exc.response.get("CancellationReasons") or []  # type: ignore[typeddict-item]
            states: dict[str, QuotaState] = {}
            found: dict[int, Mapping[str, Any]] = {}
            failed: set[int] = set()
            retry = not reasons
            for index, reason in enumerate(reasons):
                code = reason.get("Code") or "None"
                if code == "ConditionalCheckFailed":
                    failed.add(index)
                    found[index] = reason.get("Item") or {}
                    pk = pks[index] if index < len(pks) else None
                    if pk is not None:
                        states[pk] = state_from_item(reason.get("Item"))
                elif code in _RETRY_REASONS:
                    retry = True
                elif code != "None":
                    raise
            raise _Refused(states, frozenset(failed), retry, found) from exc
        self.stats.record("TransactWriteItems", response)

    def _backoff(self, attempt: int) -> None:
        """Full jitter: a random wait up to 10 ms doubled per attempt, at most 320 ms."""
        self._sleep(random.random() * min(0.32, 0.01 * 2**attempt))


_ALL_OLD: dict[str, Any] = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


def _describe(admission: Admission) -> str:
    ticket = admission.token
    tokens, cost = (ticket.tokens, ticket.cost) if isinstance(ticket, Ticket) else (0, 0)
    return (
        f"request_id={admission.request_id} key_id={admission.principal.key_id} "
        f"org_id={admission.principal.org_id} model={admission.model.id} "
        f"endpoint={admission.endpoint} reserved_tokens={tokens} "
        f"reserved_cost_usd={usd(cost):.9f}"
    )
