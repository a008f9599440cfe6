"""Settlements and releases the meter could not write, as durable queue messages.

A process that cannot reach DynamoDB after its retries hands the write to the settlement
queue instead of keeping it only in memory (a Lambda function may be frozen or recycled at
any time). The message holds everything the write needs; replaying it is idempotent, since
the ledger item is conditional on the request id and the refunds on the reservation's
lease, so a message delivered twice records once.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gantry.domain.keys import Principal
from gantry.domain.limits import Hold
from gantry.domain.metering import Actual, Admission, Estimate
from gantry.domain.registry import ModelSpec
from gantry.domain.usage import QuotaWarning

SETTLEMENT = "settlement"
RELEASE = "release"


@dataclass(frozen=True)
class Ticket:
    """The meter's bookkeeping for one admission (`Admission.token`)."""

    holds: tuple[Hold, ...]
    warnings: tuple[QuotaWarning, ...]
    org_id: str
    tokens: int = 0  # reserved
    cost: int = 0  # reserved, nano-USD
    id: str = field(default_factory=lambda: secrets.token_hex(8))  # this admission's


def to_message(
    kind: str, admission: Admission, ticket: Ticket, actual: Actual | None, at: float
) -> dict[str, Any]:
    principal = admission.principal
    return {
        "kind": kind,
        "request_id": admission.request_id,
        "principal": {
            "key_id": principal.key_id,
            "org_id": principal.org_id,
            "scopes": sorted(principal.scopes),
        },
        "endpoint": admission.endpoint,
        "model": admission.model.id,
        "estimate": {"tokens": admission.estimate.tokens, "cost_usd": admission.estimate.cost_usd},
        "ticket": {
            "holds": [asdict(h) for h in ticket.holds],
            "warnings": [asdict(w) for w in ticket.warnings],
            "org_id": ticket.org_id,
            "tokens": ticket.tokens,
            "cost": ticket.cost,
            "id": ticket.id,
        },
        "actual": asdict(actual) if actual is not None else None,
        "at": at,
    }


@dataclass(frozen=True)
class Spooled:
    kind: str
    admission: Admission
    ticket: Ticket
    actual: Actual | None
    at: float


def from_message(body: Mapping[str, Any]) -> Spooled:
    raw = body["ticket"]
    ticket = Ticket(
        tuple(Hold(**h) for h in raw["holds"]),
        tuple(QuotaWarning(**w) for w in raw["warnings"]),
        raw["org_id"],
        int(raw["tokens"]),
        int(raw["cost"]),
        raw["id"],
    )
    who = body["principal"]
    admission = Admission(
        request_id=body["request_id"],
        principal=Principal(who["key_id"], who["org_id"], frozenset(who["scopes"])),
        endpoint=body["endpoint"],
        model=ModelSpec.named(body["model"]),
        estimate=Estimate(int(body["estimate"]["tokens"]), float(body["estimate"]["cost_usd"])),
        token=ticket,
    )
    actual = Actual(**body["actual"]) if body.get("actual") else None
    return Spooled(str(body["kind"]), admission, ticket, actual, float(body["at"]))
