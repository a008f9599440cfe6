"""Fine-tuning jobs: create, list, retrieve, events, cancel and results; also under the
seed-style `/v1/fine-tuning-jobs` paths. Job reads carry `Retry-After` while a job runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from starlette.responses import Response

from gantry.domain.fine_tuning import CreateJob
from gantry.domain.jobs import FineTuningJob, retry_after
from gantry.domain.keys import Principal
from gantry.http.body import JSONBodyRoute
from gantry.http.deps import CurrentRuntime, Scope
from gantry.http.responses import json_response
from gantry.http.schemas.jobs import (
    FineTuningEventList,
    FineTuningJobList,
    FineTuningJobModel,
    FineTuningJobRequest,
    FineTuningResults,
)

FineTuningReader = Annotated[Principal, Depends(Scope("fine-tuning:read"))]
FineTuningWriter = Annotated[Principal, Depends(Scope("fine-tuning:write"))]
Limit = Annotated[int, Query(ge=1, le=100)]
After = Annotated[str | None, Query(max_length=128)]

router = APIRouter(prefix="/v1", tags=["fine-tuning"], route_class=JSONBodyRoute)
CANONICAL = "/fine_tuning/jobs"
ALIAS = "/fine-tuning-jobs"


def job_response(job: FineTuningJob) -> Response:
    wait = retry_after(job)
    return json_response(job.as_dict(), headers={"retry-after": str(wait)} if wait else None)


def create_job(
    body: FineTuningJobRequest, principal: FineTuningWriter, rt: CurrentRuntime
) -> Response:
    request = CreateJob(
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        suffix=body.suffix,
        seed=body.seed,
        hyperparameters=body.hyperparameters,
        metadata=body.metadata,
    )
    return job_response(rt.jobs.fine_tuning.create(principal.org_id, request))


def list_jobs(
    principal: FineTuningReader, rt: CurrentRuntime, limit: Limit = 20, after: After = None
) -> Response:
    jobs, more = rt.jobs.fine_tuning.list_jobs(principal.org_id, limit, after)
    return json_response({"object": "list", "data": [j.as_dict() for j in jobs], "has_more": more})


def retrieve_job(
    fine_tuning_job_id: str, principal: FineTuningReader, rt: CurrentRuntime
) -> Response:
    return job_response(rt.jobs.fine_tuning.get(principal.org_id, fine_tuning_job_id))


def list_events(
    fine_tuning_job_id: str,
    principal: FineTuningReader,
    rt: CurrentRuntime,
    limit: Limit = 20,
    after: After = None,
) -> Response:
    events, more = rt.jobs.fine_tuning.events(principal.org_id, fine_tuning_job_id, limit, after)
    body: dict[str, Any] = {
        "object": "list",
        "data": [e.as_dict() for e in events],
        "has_more": more,
    }
    return json_response(body)


def cancel_job(
    fine_tuning_job_id: str, principal: FineTuningWriter, rt: CurrentRuntime
) -> Response:
    return job_response(rt.jobs.fine_tuning.cancel(principal.org_id, fine_tuning_job_id))


def job_results(
    fine_tuning_job_id: str, principal: FineTuningReader, rt: CurrentRuntime
) -> Response:
    return json_response(rt.jobs.fine_tuning.results(principal.org_id, fine_tuning_job_id))


JOB = "/{fine_tuning_job_id}"
# (path under the prefix, method, handler, response model, operation, summary)
ROUTES: tuple[tuple[str, str, Callable[..., Response], type[BaseModel], str, str], ...] = (
    ("", "POST", create_job, FineTuningJobModel, "create", "Create a fine-tuning job"),
    ("", "GET", list_jobs, FineTuningJobList, "list", "List fine-tuning jobs (newest first)"),
    (
        JOB,
        "GET",
        retrieve_job,
        FineTuningJobModel,
        "retrieve",
        "Retrieve a fine-tuning job (Retry-After suggests the next poll)",
    ),
    (
        JOB + "/events",
        "GET",
        list_events,
        FineTuningEventList,
        "events",
        "List a job's events (newest first)",
    ),
    (JOB + "/cancel", "POST", cancel_job, FineTuningJobModel, "cancel", "Cancel a fine-tuning job"),
    (
        JOB + "/results",
        "GET",
        job_results,
        FineTuningResults,
        "results",
        "A job's metrics, result files and fine-tuned model",
    ),
)

for prefix, suffix in ((CANONICAL, ""), (ALIAS, "-alias")):
    for path, method, endpoint, model, operation, summary in ROUTES:
        router.add_api_route(
            prefix + path,
            endpoint,
            methods=[method],
            response_model=model,
            operation_id=f"fine-tuning-{operation}{suffix}",
            summary=summary,
            include_in_schema=not suffix,  # the seed-style aliases stay out of the docs
        )
