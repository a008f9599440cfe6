"""Quota items in DynamoDB (`quotas` table): one item per scope, `pk=KEY#<key_id>` or
`pk=ORG#<org_id>`, `sk=LIMITS`, holding every dimension that scope enforces:

    rq          request bucket tat (ns)          tk   token bucket tat (ns)
    dd, dt      day window "YYYY-MM-DD", tokens   mm, mc  month window "YYYY-MM", nano-USD
    ln          leases held                       L<lease id>  lease expiry (ns)
    expires_at  TTL (refreshed by every charge)

This module turns the domain's charges and refunds into conditional update expressions and
items back into states; it makes no calls itself.
"""

from __future__ import annotations

from typing import Any

from gantry.domain.limits import NS, Charge, QuotaState, Refund

SK = "LIMITS"
TTL_SECONDS = 35 * 86_400  # outlives any month window: a budget survives its month
LEASE_PREFIX = "L"


def quota_key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": SK}}


def _int(item: dict[str, Any], name: str) -> int:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else 0


def _str(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    return str(value["S"]) if value and "S" in value else ""


def state_from_item(item: dict[str, Any] | None) -> QuotaState:
    if not item:
        return QuotaState()
    leases = {
        name[len(LEASE_PREFIX) :]: int(value["N"])
        for name, value in item.items()
        if name.startswith(LEASE_PREFIX) and name != LEASE_PREFIX and "N" in value
    }
    return QuotaState(
        request_tat=_int(item, "rq"),
        token_tat=_int(item, "tk"),
        day=_str(item, "dd"),
        day_tokens=_int(item, "dt"),
        month=_str(item, "mm"),
        month_cost=_int(item, "mc"),
        leases_held=_int(item, "ln"),
        leases=leases,
    )


class Expression:
    """Collects the parts of one conditional UpdateItem, with placeholders for every name and
    value (several attribute names are DynamoDB reserved words)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, dict[str, str]] = {}
        self.conditions: list[str] = []
        self.sets: list[str] = []
        self.adds: list[str] = []
        self.removes: list[str] = []

    def name(self, attribute: str) -> str:
        for placeholder, known in self.names.items():
            if known == attribute:
                return placeholder
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: int | str) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = {"S": value} if isinstance(value, str) else {"N": str(value)}
        return placeholder

    def params(self, table: str, key: dict[str, Any]) -> dict[str, Any]:
        clauses = []
        if self.sets:
            clauses.append("SET " + ", ".join(self.sets))
        if self.adds:
            clauses.append("ADD " + ", ".join(self.adds))
        if self.removes:
            clauses.append("REMOVE " + ", ".join(self.removes))
        params: dict[str, Any] = {
            "TableName": table,
            "Key": key,
            "UpdateExpression": " ".join(clauses),
            "ExpressionAttributeNames": self.names,
        }
        if self.values:
            params["ExpressionAttributeValues"] = self.values
        if self.conditions:
            params["ConditionExpression"] = " AND ".join(self.conditions)
        return params


def _bucket(e: Expression, attribute: str, case: str, now: int, step: int, max_tat: int) -> None:
    """idle: tat <= now, restart the bucket at now + step. queued: now < tat <= max_tat, add
    step. Together they are max(tat, now) + step, split so each case is one expression."""
    name = e.name(attribute)
    if case == "idle":
        e.conditions.append(f"(attribute_not_exists({name}) OR {name} <= {e.value(now)})")
        e.sets.append(f"{name} = {e.value(now + step)}")
    else:
        e.conditions.append(f"{name} > {e.value(now)} AND {name} <= {e.value(max_tat)}")
        e.adds.append(f"{name} {e.value(step)}")


def _window(
    e: Expression,
    window_attr: str,
    count_attr: str,
    case: str,
    window: str,
    amount: int,
    max_used: int | None,
) -> None:
    """same: the window is current and count <= max_used, add. new: the stored window is
    older (or absent), restart the count at `amount`."""
    win, count = e.name(window_attr), e.name(count_attr)
    if case == "same":
        condition = f"{win} = {e.value(window)}"
        if max_used is not None:
            condition += f" AND {count} <= {e.value(max_used)}"
        e.conditions.append(condition)
        e.adds.append(f"{count} {e.value(amount)}")
    else:
        e.conditions.append(f"(attribute_not_exists({win}) OR {win} < {e.value(window)})")
        e.sets.append(f"{win} = {e.value(window)}")
        e.sets.append(f"{count} = {e.value(amount)}")


def charge_params(table: str, charge: Charge) -> dict[str, Any]:
    """The conditional update admitting `charge`: it succeeds only if every dimension is in
    the case the charge expects and within its bound."""
    e = Expression()
    res = charge.reservation
    if charge.request_case is not None:
        _bucket(e, "rq", charge.request_case, res.now, charge.request_step, charge.request_max_tat)
    if charge.token_case is not None:
        _bucket(e, "tk", charge.token_case, res.now, charge.token_step, charge.token_max_tat)
    if charge.day_case is not None:
        _window(e, "dd", "dt", charge.day_case, charge.day, res.tokens, charge.day_max_used)
    if charge.month_case is not None:
        _window(e, "mm", "mc", charge.month_case, charge.month, res.cost, charge.month_max_used)
    held = e.name("ln")
    if charge.lease_max_held is not None:
        e.conditions.append(
            f"(attribute_not_exists({held}) OR {held} < {e.value(charge.lease_max_held)})"
        )
    for reaped, expiry in charge.reap:
        lease = e.name(LEASE_PREFIX + reaped)
        e.conditions.append(f"{lease} = {e.value(expiry)}")
        e.removes.append(lease)
    e.sets.append(f"{e.name(LEASE_PREFIX + res.lease_id)} = {e.value(res.lease_expiry)}")
    e.adds.append(f"{held} {e.value(1 - len(charge.reap))}")
    e.sets.append(f"{e.name('expires_at')} = {e.value(res.now // NS + TTL_SECONDS)}")
    return e.params(table, quota_key(charge.limits.pk))


def refund_params(table: str, refund: Refund) -> dict[str, Any] | None:
    """The update applying `refund`, conditioned on what makes it valid: the lease (when it
    is dropped or required) and the windows its refunds belong to."""
    if refund.empty:
        return None
    e = Expression()
    hold = refund.hold
    lease = e.name(LEASE_PREFIX + hold.lease_id)
    if refund.drop_lease or refund.require_lease:
        e.conditions.append(f"attribute_exists({lease})")
    if refund.token_tat:
        e.adds.append(f"{e.name('tk')} {e.value(refund.token_tat)}")
    if refund.day_tokens and hold.day is not None:
        e.conditions.append(f"{e.name('dd')} = {e.value(hold.day)}")
        e.adds.append(f"{e.name('dt')} {e.value(refund.day_tokens)}")
    if refund.month_cost and hold.month is not None:
        e.conditions.append(f"{e.name('mm')} = {e.value(hold.month)}")
        e.adds.append(f"{e.name('mc')} {e.value(refund.month_cost)}")
    if refund.drop_lease:
        e.removes.append(lease)
        e.adds.append(f"{e.name('ln')} {e.value(-1)}")
    return e.params(table, quota_key(hold.pk))
