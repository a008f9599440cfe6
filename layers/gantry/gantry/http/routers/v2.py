"""POST /v2/chat/completions: the v1 request, answered in the v2 envelope (content in
`output`, everything about the request in `usage`, `model` and `metadata`), buffered or
streamed. The chunk shape is documented in docs/versioning.md."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from gantry.domain.inference import GenerationOutcome
from gantry.domain.lifecycle import model_lifecycle
from gantry.domain.registry import ModelSpec
from gantry.http.body import JSONBodyRoute
from gantry.http.deprecation import route_entry
from gantry.http.deps import CompletionsKey, CurrentRuntime
from gantry.http.errors import request_id_of
from gantry.http.metering import metered
from gantry.http.responses import inference_headers, json_response, new_id
from gantry.http.routers.completions import (
    STREAM_CACHE_HEADERS,
    _chat_logprobs,
    _fingerprint,
    plan_chat,
)
from gantry.http.schemas.chat import ChatCompletionRequest
from gantry.http.schemas.v2 import V2ChatCompletion
from gantry.http.streaming import ChunkFormat, stream_response
from gantry.http.timing import processing_ms

router = APIRouter(prefix="/v2", tags=["v2"], route_class=JSONBodyRoute)

PATH = "/v2/chat/completions"


def warnings(spec: ModelSpec) -> list[str]:
    found = []
    entry = route_entry("POST", PATH)
    if entry is not None and entry.lifecycle.announced:
        found.append(entry.lifecycle.warning())
    lifecycle = model_lifecycle(spec)
    if lifecycle is not None and lifecycle.announced:
        found.append(lifecycle.warning())
    return found


def v2_usage(prompt: int, completion: int, cached: int, cost: float) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": cached,
        "cost_usd": cost,
    }


def metadata(request: Request, cache: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    return {
        "request_id": request_id_of(request) or "",
        "processing_ms": processing_ms(request),
        "cache": cache,
        "warnings": warnings(spec),
    }


@dataclass
class V2ChunkFormat(ChunkFormat):
    """v2 chunks: `output.choices[].delta` while generating; the last chunk before
    `[DONE]` carries `usage` (with cost_usd) and `metadata`."""

    spec: ModelSpec | None = None
    request: Request | None = None
    warned: list[str] = field(default_factory=list)

    def chunk(self, choices: list[dict[str, Any]], usage_body: Any = None) -> dict[str, Any]:
        assert self.spec is not None and self.request is not None
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": {"id": self.spec.id, "version": self.spec.version},
            "output": {"choices": choices},
        }
        if usage_body is not None:
            prompt, completion = usage_body["prompt_tokens"], usage_body["completion_tokens"]
            cost = self.spec.cost_usd(prompt, completion)
            body["usage"] = v2_usage(prompt, completion, 0, cost)
            body["metadata"] = metadata(self.request, {"status": "BYPASS"}, self.spec)
        return body


@router.post(
    "/chat/completions",
    response_model=V2ChatCompletion,
    operation_id="v2-chat-create",
    summary="Create a chat completion (v2 envelope)",
    description=(
        "The request of POST /v1/chat/completions; the answer separates content (`output`) "
        "from metadata (`usage` with `cost_usd`, `model` with its version, `metadata` with "
        "the request id, processing time, cache status and deprecation warnings). With "
        "`stream: true`, chunks carry `output.choices[].delta` and the last one before "
        "`[DONE]` carries `usage` and `metadata`."
    ),
)
async def create_v2_chat_completion(
    body: ChatCompletionRequest, principal: CompletionsKey, rt: CurrentRuntime, request: Request
) -> Response:
    plan = plan_chat(rt, body)
    if body.stream:
        fmt = V2ChunkFormat(
            "chat.completion.chunk",
            plan.spec.id,
            _fingerprint(plan.spec.version),
            chat=True,
            include_usage=True,
            spec=plan.spec,
            request=request,
        )
        interval = body.stream_options.usage_interval_tokens if body.stream_options else None
        streamed = await stream_response(rt, request, principal, plan, fmt, interval)
        streamed.stream_headers.update(STREAM_CACHE_HEADERS)
        return streamed
    outcome: GenerationOutcome
    outcome, admission = await metered(rt, request, principal, plan)
    headers = inference_headers(outcome, admission)
    cache: dict[str, Any] = {"status": headers.get("x-cache-status", "BYPASS")}
    if "x-cache-similarity" in headers:
        cache["similarity"] = float(headers["x-cache-similarity"])
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": choice.text},
            "finish_reason": choice.finish_reason,
            "logprobs": _chat_logprobs(choice) if body.logprobs else None,
        }
        for index, choice in enumerate(outcome.result.choices)
    ]
    spec = outcome.spec
    payload = {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "output": {"choices": choices},
        "usage": v2_usage(
            outcome.prompt_tokens,
            outcome.completion_tokens,
            outcome.cached_tokens,
            outcome.cost_usd,
        ),
        "model": {"id": spec.id, "version": spec.version},
        "metadata": metadata(request, cache, spec),
    }
    return json_response(payload, headers=headers)
