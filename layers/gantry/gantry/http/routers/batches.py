"""Batches: create, list, retrieve and cancel. Reads of a running batch carry
`Retry-After`, the suggested wait before the next poll."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from gantry.domain.batch_service import CreateBatch
from gantry.domain.batches import Batch, retry_after
from gantry.domain.keys import Principal
from gantry.http.body import JSONBodyRoute
from gantry.http.deps import CurrentRuntime, Scope
from gantry.http.responses import json_response
from gantry.http.schemas.batches import BatchList, BatchModel, BatchRequest

BatchReader = Annotated[Principal, Depends(Scope("batches:read"))]
BatchWriter = Annotated[Principal, Depends(Scope("batches:write"))]

router = APIRouter(prefix="/v1", tags=["batches"], route_class=JSONBodyRoute)


def batch_response(batch: Batch) -> Response:
    wait = retry_after(batch)
    return json_response(batch.as_dict(), headers={"retry-after": str(wait)} if wait else None)


@router.post(
    "/batches", response_model=BatchModel, operation_id="batches-create", summary="Create a batch"
)
def create_batch(body: BatchRequest, principal: BatchWriter, rt: CurrentRuntime) -> Response:
    request = CreateBatch(
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
    )
    return batch_response(rt.jobs.batches.create(principal, request))


@router.get(
    "/batches",
    response_model=BatchList,
    operation_id="batches-list",
    summary="List batches (newest first)",
)
def list_batches(
    principal: BatchReader,
    rt: CurrentRuntime,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    found, more = rt.jobs.batches.list_batches(principal.org_id, limit, after)
    return json_response(
        {
            "object": "list",
            "data": [b.as_dict() for b in found],
            "first_id": found[0].id if found else None,
            "last_id": found[-1].id if found else None,
            "has_more": more,
        }
    )


@router.get(
    "/batches/{batch_id}",
    response_model=BatchModel,
    operation_id="batches-retrieve",
    summary="Retrieve a batch (Retry-After suggests the next poll)",
)
def retrieve_batch(batch_id: str, principal: BatchReader, rt: CurrentRuntime) -> Response:
    return batch_response(rt.jobs.batches.get(principal.org_id, batch_id))


@router.post(
    "/batches/{batch_id}/cancel",
    response_model=BatchModel,
    operation_id="batches-cancel",
    summary="Cancel a batch: lines not yet run are not run",
)
def cancel_batch(batch_id: str, principal: BatchWriter, rt: CurrentRuntime) -> Response:
    return batch_response(rt.jobs.batches.cancel(principal.org_id, batch_id))
