"""Running a planned provider call between admission and settlement."""

from __future__ import annotations

from fastapi import Request

from gantry.domain.deadlines import CancelToken, caller_scope
from gantry.domain.inference import OutcomeT, Plan
from gantry.domain.keys import Principal
from gantry.domain.metering import Actual, Admission
from gantry.domain.model_access import require_visible
from gantry.http import caching
from gantry.http.disconnect import run_unless_disconnected
from gantry.http.errors import billing_id_of
from gantry.http.timing import timings_of
from gantry.runtime import Runtime


async def metered(
    rt: Runtime,
    request: Request,
    principal: Principal,
    plan: Plan[OutcomeT],
    *,
    request_id: str | None = None,
) -> tuple[OutcomeT, Admission]:
    """Admit the plan's estimate, run it (or serve it from the response cache), settle what
    it really used.

    The three steps share one worker thread (one hop per request); when neither the meter
    nor the model does I/O they run on the event loop. A call that fails releases its
    reservation, so a provider error never costs the caller quota. The cache lookup runs
    alongside admission and the cache write alongside settlement, so caching adds no
    round trip of its own to the response time.

    A client that disconnects while the worker thread runs cancels the provider call: an
    HTTP request to the upstream is aborted and its reservation released. A call that
    cannot be interrupted (Bedrock, an in-process model) finishes on its own and is settled
    like a stream cut short: the provider did the work, so it is billed.
    """
    require_visible(plan.spec, principal.org_id)
    meter = rt.meter
    # A request that makes several model calls settles each under its own id.
    request_id = request_id or billing_id_of(request) or ""
    cache = caching.cache_context(rt, request, principal, plan)
    timings = timings_of(request)
    # A batch line (see gantry.http.batch_lines) is billed at the model's batch discount.
    discount = plan.spec.batch_discount if request.scope.get("state", {}).get("batch") else 0.0
    left = CancelToken()

    def call() -> tuple[OutcomeT, Admission]:
        pending = None
        if cache is not None and (cache.policy.lookup or cache.index is not None):
            pending = caching.pool().submit(caching.lookup, rt, cache, plan)
        with timings.measure("admission"):
            admission = meter.admit(request_id, principal, plan.endpoint, plan.spec, plan.estimate)
        hit = None
        if pending is not None:
            hit = pending.result()
            timings.add("cache", cache.lookup_ms if cache is not None else 0.0)
        try:
            if hit is not None:
                outcome: OutcomeT = hit  # type: ignore[assignment]
            else:
                with timings.measure("model"), caller_scope(left):
                    outcome = plan.run()
        except BaseException:
            meter.release(admission)
            raise
        writes = []
        if cache is not None and hit is None and cache.policy.store:
            writes = caching.store(rt, cache, outcome)
        actual = Actual(
            outcome.prompt_tokens,
            outcome.completion_tokens,
            outcome.cost_usd * (1.0 - discount),
            outcome.cached_tokens,
        )
        with timings.measure("settlement"):
            meter.settle(admission, actual)
        caching.wait(writes)
        if cache is not None:
            admission.headers.update(cache.headers())
        return outcome, admission

    if plan.instant and meter.inline and (cache is None or not cache.active):
        return call()
    return await run_unless_disconnected(request, call, left.cancel)
