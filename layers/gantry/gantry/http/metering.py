"""Running a planned provider call between admission and settlement."""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from gantry.domain.inference import OutcomeT, Plan
from gantry.domain.keys import Principal
from gantry.domain.metering import Actual, Admission
from gantry.http.errors import request_id_of
from gantry.runtime import Runtime


async def metered(
    rt: Runtime, request: Request, principal: Principal, plan: Plan[OutcomeT]
) -> tuple[OutcomeT, Admission]:
    """Admit the plan's estimate, run it, settle what it really used.

    The three steps share one worker thread (one hop per request); when neither the meter
    nor the model does I/O they run on the event loop. A call that fails releases its
    reservation, so a provider error never costs the caller quota.
    """
    meter = rt.meter
    request_id = request_id_of(request) or ""

    def call() -> tuple[OutcomeT, Admission]:
        admission = meter.admit(request_id, principal, plan.endpoint, plan.spec, plan.estimate)
        try:
            outcome = plan.run()
        except BaseException:
            meter.release(admission)
            raise
        actual = Actual(outcome.prompt_tokens, outcome.completion_tokens, outcome.cost_usd)
        meter.settle(admission, actual)
        return outcome, admission

    if plan.instant and meter.inline:
        return call()
    return await run_in_threadpool(call)
