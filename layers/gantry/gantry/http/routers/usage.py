"""Usage: GET /v1/usage, the caller's own usage with its limits and quota warnings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from gantry.domain.errors import NotFound, PermissionDenied
from gantry.domain.keys import KeyRecord, Principal
from gantry.domain.limits import RPM, LimitView, limit_views, to_ns
from gantry.domain.usage import UsageQuery, aggregate, parse_query, quota_warnings
from gantry.http.deps import CurrentRuntime, Scope
from gantry.http.responses import json_response
from gantry.http.schemas.usage import UsageReport
from gantry.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["usage"])

UsageKey = Annotated[Principal, Depends(Scope("usage:read"))]
ADMIN_SCOPE = "keys:read"  # admin:full grants it too


@router.get(
    "/usage",
    response_model=UsageReport,
    operation_id="usage-get",
    summary="Usage, limits and quota warnings",
    description=(
        "Totals and time buckets of the caller's usage, every limit that applies to it with "
        "what is used and when it resets, and the quotas past 80%. A key sees its own usage; "
        f"an administrator key (`admin:full` or `{ADMIN_SCOPE}`) sees its organization's, or "
        "one of its organization's keys with `key_id`."
    ),
)
async def get_usage(
    principal: UsageKey,
    rt: CurrentRuntime,
    start: Annotated[
        int | None, Query(description="Unix seconds; default: 7 days (1d) or 24 h (1h) ago.")
    ] = None,
    end: Annotated[int | None, Query(description="Unix seconds, exclusive; default: now.")] = None,
    bucket_width: Annotated[str | None, Query(description="`1h` or `1d` (default).")] = None,
    group_by: Annotated[
        str | None, Query(description="Comma-separated: `model`, `endpoint`, `key_id`.")
    ] = None,
    key_id: Annotated[
        str | None, Query(description="A key of the caller's organization (administrators).")
    ] = None,
) -> Response:
    query = parse_query(
        start=start,
        end=end,
        bucket_width=bucket_width,
        group_by=group_by,
        key_id=key_id,
        now=rt.clock.now(),
    )
    body = await run_in_threadpool(usage_report, rt, principal, query)
    return json_response(body)


def _subject(rt: Runtime, principal: Principal, query: UsageQuery) -> KeyRecord | None:
    """The key whose usage is read, or None for the organization's (administrators)."""
    admin = principal.can(ADMIN_SCOPE)
    if query.key_id is None or query.key_id == principal.key_id:
        if admin and query.key_id is None:
            return None
        hit, record = rt.authenticator.cached(principal.key_id)
        found = record if hit else rt.authenticator.load(principal.key_id)
        if found is None:
            raise NotFound("This key no longer exists.", code="not_found", param="key_id")
        return found
    if not admin:
        raise PermissionDenied(
            f"Reading another key's usage needs the '{ADMIN_SCOPE}' scope.",
            code="insufficient_scope",
            details={"required_scope": ADMIN_SCOPE},
        )
    record = rt.key_store.get_key(query.key_id)
    if record is None or record.org_id != principal.org_id:
        raise NotFound(
            f"No key '{query.key_id}' in your organization.", code="not_found", param="key_id"
        )
    return record


def _limit_body(view: LimitView) -> dict[str, Any]:
    return {
        "scope": view.scope,
        "dimension": view.dimension,
        "limit": view.limit,
        "burst": int(view.capacity) if view.dimension == RPM else None,
        "used": view.used,
        "remaining": view.remaining,
        "reset_at": view.reset_at,
        "percent": view.percent,
    }


def usage_report(rt: Runtime, principal: Principal, query: UsageQuery) -> dict[str, Any]:
    key = _subject(rt, principal, query)
    pk = f"KEY#{key.key_id}" if key is not None else f"ORG#{principal.org_id}"
    rows = rt.usage.rows(pk, query.first_hour, query.last_hour)
    scoped = Principal(key.key_id, key.org_id, key.scopes) if key is not None else principal
    org, own = rt.limits.scopes(scoped, key=key)
    scopes = [org] + ([own] if key is not None and own.tracked else [])
    states = rt.usage.quota_states([s.pk for s in scopes if s.tracked])
    now = to_ns(rt.clock.now())
    views = [v for s in scopes if s.tracked for v in limit_views(s, states[s.pk], now)]
    totals, buckets = aggregate(rows, query)
    return {
        "object": "usage.report",
        "scope": "key" if key is not None else "organization",
        "org_id": principal.org_id,
        "key_id": key.key_id if key is not None else None,
        "start_time": query.start,
        "end_time": query.end,
        "bucket_width": query.bucket_width,
        "group_by": list(query.group_by),
        "totals": totals,
        "buckets": buckets,
        "limits": [_limit_body(v) for v in views],
        "warnings": [w.as_dict() for w in quota_warnings(views)],
    }
