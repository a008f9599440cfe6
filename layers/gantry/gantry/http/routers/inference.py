"""Inference routes that answer in one piece: embeddings, classifications, moderations."""

from __future__ import annotations

import base64
import struct
import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from gantry.domain.errors import InvalidRequest
from gantry.domain.inference import MAX_EMBEDDING_INPUTS
from gantry.http.body import JSONBodyRoute
from gantry.http.deps import CompletionsKey, CurrentRuntime
from gantry.http.metering import metered
from gantry.http.responses import inference_headers, json_response, new_id, usage
from gantry.http.schemas.tasks import (
    ClassificationList,
    ClassificationRequest,
    EmbeddingList,
    EmbeddingRequest,
    Moderation,
    ModerationRequest,
    ModerationTextPart,
)

router = APIRouter(prefix="/v1", tags=["inference"], route_class=JSONBodyRoute)


# --- embeddings --------------------------------------------------------------------------


@router.post(
    "/embeddings",
    response_model=EmbeddingList,
    operation_id="embeddings-create",
    summary="Create embeddings",
)
async def create_embeddings(
    body: EmbeddingRequest, principal: CompletionsKey, rt: CurrentRuntime, request: Request
) -> Response:
    inputs = _embedding_inputs(body, rt)
    plan = rt.inference.plan_embedding(body.model, inputs, body.dimensions)
    outcome, admission = await metered(rt, request, principal, plan)
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _encode(vector, body.encoding_format),
        }
        for index, vector in enumerate(outcome.result.vectors)
    ]
    payload = {
        "object": "list",
        "data": data,
        "model": outcome.spec.id,
        "usage": usage(outcome.prompt_tokens, None, outcome.cached_tokens),
    }
    return json_response(payload, headers=inference_headers(outcome, admission))


def _embedding_inputs(body: EmbeddingRequest, rt: CurrentRuntime) -> list[str]:
    raw = body.input
    if isinstance(raw, str):
        raw = [raw]
    if not raw:
        raise InvalidRequest(
            "'input' must be a non-empty string or a non-empty array of strings.",
            code="invalid_value",
            param="input",
        )
    if len(raw) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(
            f"'input' has {len(raw)} items; at most {MAX_EMBEDDING_INPUTS} are allowed per "
            "request. Split the inputs across requests.",
            code="invalid_value",
            param="input",
        )
    if not all(isinstance(item, str) for item in raw):
        spec = rt.inference.registry.for_capability(body.model, "embeddings")
        raise InvalidRequest(
            f"The model '{spec.id}' does not accept token-id arrays as 'input'; send text.",
            code="unsupported_parameter",
            param="input",
        )
    texts = [str(item) for item in raw]
    for index, text in enumerate(texts):
        if not text.strip():
            where = "input" if isinstance(body.input, str) else f"input[{index}]"
            raise InvalidRequest(
                f"'{where}' is empty; every input must contain text.",
                code="invalid_value",
                param=where,
            )
    return texts


def _encode(vector: tuple[float, ...], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return list(vector)


# --- classifications ---------------------------------------------------------------------


@router.post(
    "/classifications",
    response_model=ClassificationList,
    operation_id="classifications-create",
    summary="Classify text over caller-given labels",
)
async def create_classification(
    body: ClassificationRequest, principal: CompletionsKey, rt: CurrentRuntime, request: Request
) -> Response:
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if len(set(body.labels)) != len(body.labels):
        raise InvalidRequest("'labels' must be distinct.", code="invalid_value", param="labels")
    plan = rt.inference.plan_classification(body.model, inputs, body.labels)
    outcome, admission = await metered(rt, request, principal, plan)
    results = []
    for index, scores in enumerate(outcome.result.scores):
        ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
        results.append(
            {
                "index": index,
                "label": ranked[0][0],
                "score": ranked[0][1],
                "scores": [{"label": label, "score": score} for label, score in ranked],
            }
        )
    payload = {
        "id": new_id("clf"),
        "object": "classification",
        "created": int(time.time()),
        "model": outcome.spec.id,
        "results": results,
        "usage": usage(outcome.prompt_tokens, None, outcome.cached_tokens),
    }
    return json_response(payload, headers=inference_headers(outcome, admission))


# --- moderations -------------------------------------------------------------------------


@router.post(
    "/moderations",
    response_model=Moderation,
    operation_id="moderations-create",
    summary="Classify text against the content policy",
)
async def create_moderation(
    body: ModerationRequest, principal: CompletionsKey, rt: CurrentRuntime, request: Request
) -> Response:
    model = body.model or rt.settings.default_moderation_model
    inputs = _moderation_inputs(body, model, rt)
    plan = rt.inference.plan_moderation(model, inputs)
    outcome, admission = await metered(rt, request, principal, plan)
    results = [
        {
            "flagged": verdict.flagged,
            "categories": dict(verdict.categories),
            "category_scores": dict(verdict.category_scores),
            "category_applied_input_types": {name: ["text"] for name in verdict.categories},
        }
        for verdict in outcome.result.results
    ]
    payload = {
        "id": new_id("modr"),
        "model": outcome.spec.id,
        "results": results,
        "usage": usage(outcome.prompt_tokens, None, outcome.cached_tokens),
    }
    return json_response(payload, headers=inference_headers(outcome, admission))


def _moderation_inputs(body: ModerationRequest, model: str, rt: CurrentRuntime) -> list[str]:
    raw = body.input
    if isinstance(raw, str):
        return [raw]
    if not raw:
        raise InvalidRequest(
            "'input' must be a string, an array of strings, or an array of content parts.",
            code="invalid_value",
            param="input",
        )
    if all(isinstance(item, str) for item in raw):
        return [str(item) for item in raw]
    texts = []
    for index, part in enumerate(raw):
        if not isinstance(part, ModerationTextPart):
            spec = rt.inference.registry.for_capability(model, "moderations")
            raise InvalidRequest(
                f"The model '{spec.id}' moderates text only; 'input[{index}]' is an image.",
                code="unsupported_parameter",
                param=f"input[{index}]",
            )
        texts.append(part.text)
    return ["\n".join(texts)]
