"""Model catalogue: GET /v1/models and GET /v1/models/{model_id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from gantry.domain.model_access import require_visible
from gantry.domain.registry import ModelSpec
from gantry.http.deps import CurrentRuntime, ModelsKey
from gantry.http.responses import json_response, model_headers
from gantry.http.schemas.models import Model, ModelList

router = APIRouter(prefix="/v1", tags=["models"])


def model_body(spec: ModelSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "object": "model",
        "created": spec.created,
        "owned_by": spec.owned_by,
        "version": spec.version,
        "description": spec.description,
        "context_window": spec.context_window,
        "max_output_tokens": spec.max_output_tokens,
        "pricing": {
            "input_per_million": spec.input_price_per_million,
            "output_per_million": spec.output_price_per_million,
            "cached_input_per_million": spec.cached_input_price_per_million,
            "cached_output_per_million": spec.cached_output_price_per_million,
            "currency": "USD",
        },
        "capabilities": sorted(spec.capabilities),
        "tokenizer": spec.tokenizer,
        "embedding_dimensions": spec.embedding_dimensions,
        "deprecation_date": spec.deprecation_date.isoformat() if spec.deprecation_date else None,
        "sunset_date": spec.sunset_date.isoformat() if spec.sunset_date else None,
        "replacement": spec.replacement,
    }


@router.get("/models", response_model=ModelList, operation_id="models-list", summary="List models")
async def list_models(principal: ModelsKey, rt: CurrentRuntime) -> Response:
    data = [model_body(spec) for spec in rt.registry.all() if spec.owner_org is None]
    own = await run_in_threadpool(rt.jobs.fine_tuned.list_for, principal.org_id)
    data += [model_body(spec) for spec in own]
    return json_response({"object": "list", "data": data})


@router.get(
    "/models/{model_id}",
    response_model=Model,
    operation_id="models-retrieve",
    summary="Retrieve a model",
)
async def retrieve_model(model_id: str, principal: ModelsKey, rt: CurrentRuntime) -> Response:
    spec = await run_in_threadpool(rt.registry.get, model_id)  # may load a fine-tuned model
    require_visible(spec, principal.org_id)
    return json_response(model_body(spec), headers=model_headers(spec))
