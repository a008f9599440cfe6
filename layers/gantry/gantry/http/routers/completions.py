"""Chat and text completions, buffered or streamed (`stream: true`) as server-sent events."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from gantry.domain.errors import InvalidRequest
from gantry.domain.inference import GenerationOutcome, Plan, Sampling
from gantry.http.body import JSONBodyRoute
from gantry.http.deps import CompletionsKey, CurrentRuntime
from gantry.http.metering import metered
from gantry.http.responses import inference_headers, json_response, new_id, usage
from gantry.http.schemas.chat import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Completion,
    CompletionRequest,
    SamplingFields,
)
from gantry.http.streaming import ChunkFormat, stream_response
from gantry.ports import Generation, Message, TokenLogprob
from gantry.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["completions"], route_class=JSONBodyRoute)

_ALWAYS_UNSUPPORTED = {  # chat parameter -> capability a model needs to honour it
    "audio": "audio",
    "prediction": "predicted_outputs",
    "reasoning_effort": "reasoning",
    "verbosity": "reasoning",
    "web_search_options": "web_search",
}
# Streams are neither served from nor written to the response cache.
STREAM_CACHE_HEADERS = {"x-cache-status": "BYPASS"}
_TOOL_PARAMS = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")


# --- chat ----------------------------------------------------------------------------------


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    operation_id="chat-create",
    summary="Create a chat completion",
)
async def create_chat_completion(
    body: ChatCompletionRequest, principal: CompletionsKey, rt: CurrentRuntime, request: Request
) -> Response:
    plan = plan_chat(rt, body)
    if body.stream:
        fmt = ChunkFormat(
            "chat.completion.chunk",
            plan.spec.id,
            _fingerprint(plan.spec.version),
            chat=True,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )
        interval = body.stream_options.usage_interval_tokens if body.stream_options else None
        streamed = await stream_response(rt, request, principal, plan, fmt, interval)
        streamed.stream_headers.update(STREAM_CACHE_HEADERS)
        return streamed
    outcome, admission = await metered(rt, request, principal, plan)
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": choice.text, "refusal": None},
            "logprobs": _chat_logprobs(choice) if body.logprobs else None,
            "finish_reason": choice.finish_reason,
        }
        for index, choice in enumerate(outcome.result.choices)
    ]
    payload = {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": outcome.spec.id,
        "system_fingerprint": _fingerprint(outcome.spec.version),
        "service_tier": "default",
        "choices": choices,
        "usage": usage(outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens),
    }
    return json_response(payload, headers=inference_headers(outcome, admission))


def plan_chat(rt: Runtime, body: ChatCompletionRequest) -> Plan[GenerationOutcome]:
    """The model call a chat request asks for (v1 and v2 alike): messages, parameters the
    model must honour or refuse, and the sampling controls."""
    messages, features = _messages(body.messages)
    features.update(_chat_features(body))
    max_tokens, max_param = _chat_max_tokens(body)
    sampling = _sampling(
        body,
        max_tokens=max_tokens,
        max_param=max_param,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
        features=features,
    )
    return rt.inference.plan_chat(body.model, messages, sampling)


def _messages(raw: list[ChatMessage]) -> tuple[list[Message], dict[str, str]]:
    messages: list[Message] = []
    features: dict[str, str] = {}
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if message.role == "tool" or message.tool_calls is not None:
            features[f"{where}.role" if message.role == "tool" else f"{where}.tool_calls"] = "tools"
        content = message.content
        if content is None:
            if message.role == "assistant" and message.tool_calls:
                content = ""
            else:
                raise InvalidRequest(
                    f"'{where}.content' is missing: every {message.role} message needs content "
                    "(a string or an array of text parts).",
                    code="missing_required_parameter",
                    param=f"{where}.content",
                )
        if isinstance(content, list):
            texts = []
            for part_index, part in enumerate(content):
                if part.type == "text":
                    texts.append(getattr(part, "text", ""))
                else:
                    needs = "audio" if part.type == "input_audio" else "vision"
                    features[f"{where}.content[{part_index}]"] = needs
            content = "".join(texts)
        messages.append(Message(role=message.role, content=content, name=message.name))
    return messages, features


def _chat_features(body: ChatCompletionRequest) -> dict[str, str]:
    if body.store:
        raise InvalidRequest(
            "'store' is not supported: Gantry does not keep chat completions. Omit it or set "
            "it to false.",
            code="unsupported_parameter",
            param="store",
        )
    if body.service_tier not in (None, "auto", "default"):
        raise InvalidRequest(
            f"Invalid value for 'service_tier': '{body.service_tier}'. Use 'auto' or 'default'.",
            code="invalid_value",
            param="service_tier",
        )
    features: dict[str, str] = {}
    for name in _TOOL_PARAMS:
        if getattr(body, name) is not None:
            features[name] = "tools"
    if body.response_format is not None and body.response_format.type != "text":
        features["response_format"] = "json_mode"
    if body.logprobs:
        features["logprobs"] = "logprobs"
    if body.modalities is not None and any(m != "text" for m in body.modalities):
        features["modalities"] = "audio"
    for name, capability in _ALWAYS_UNSUPPORTED.items():
        if getattr(body, name) is not None:
            features[name] = capability
    return features


def _chat_max_tokens(body: ChatCompletionRequest) -> tuple[int | None, str]:
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise InvalidRequest(
            "Set only one of 'max_tokens' and 'max_completion_tokens' (max_tokens is the "
            "deprecated name of max_completion_tokens).",
            code="invalid_value",
            param="max_tokens",
        )
    if body.max_completion_tokens is not None:
        return body.max_completion_tokens, "max_completion_tokens"
    return body.max_tokens, "max_tokens"


def _sampling(
    body: SamplingFields,
    *,
    max_tokens: int | None,
    max_param: str,
    logprobs: bool,
    top_logprobs: int,
    features: dict[str, str],
    n: int | None = None,
) -> Sampling:
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.",
            code="invalid_value",
            param="stream_options",
        )
    if body.stream and logprobs:
        raise InvalidRequest(
            "'logprobs' cannot be combined with 'stream': true here; stream without logprobs, "
            "or ask for logprobs in a buffered request.",
            code="unsupported_parameter",
            param="logprobs",
        )
    if body.logit_bias:
        features["logit_bias"] = "logit_bias"
    if body.seed is not None:
        features["seed"] = "seed"
    stop = body.stop
    return Sampling(
        max_tokens=max_tokens,
        max_tokens_param=max_param,
        temperature=body.temperature,
        top_p=body.top_p,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        seed=body.seed,
        n=n if n is not None else body.n or 1,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        logit_bias={int(k): v for k, v in (body.logit_bias or {}).items()},
        features=features,
    )


def _fingerprint(version: str) -> str:
    return "fp_" + version.replace("-", "")


def _token_bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def _chat_logprobs(choice: Generation) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": item.token,
                "logprob": item.logprob,
                "bytes": _token_bytes(item.token),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": _token_bytes(t.token)}
                    for t in item.top_logprobs
                ],
            }
            for item in choice.logprobs or ()
        ],
        "refusal": None,
    }


# --- legacy text completions --------------------------------------------------------------


@router.post(
    "/completions",
    response_model=Completion,
    operation_id="completions-create",
    summary="Create a text completion (legacy)",
    deprecated=True,
    description="Legacy text completions. Use POST /v1/chat/completions instead.",
)
async def create_completion(
    body: CompletionRequest, principal: CompletionsKey, rt: CurrentRuntime, request: Request
) -> Response:
    prompts, features = _prompts(body)
    if body.suffix is not None:
        features["suffix"] = "insert"
    if body.logprobs is not None:
        features["logprobs"] = "logprobs"
        if body.echo:
            features["echo"] = "prompt_logprobs"
    n = body.n or 1
    best_of = body.best_of or n
    if best_of < n:
        raise InvalidRequest(
            f"'best_of' ({best_of}) must be greater than or equal to 'n' ({n}).",
            code="invalid_value",
            param="best_of",
        )
    ranked = best_of > n
    if body.stream and (ranked or body.echo):
        param = "best_of" if ranked else "echo"
        raise InvalidRequest(
            f"'{param}' cannot be combined with 'stream': true.",
            code="invalid_value",
            param=param,
        )
    sampling = _sampling(
        body,
        max_tokens=body.max_tokens,
        max_param="max_tokens",
        logprobs=body.logprobs is not None or ranked,
        top_logprobs=body.logprobs or 0,
        features=features,
        n=best_of,
    )
    plan = rt.inference.plan_completion(body.model, prompts, sampling)
    if body.stream:
        fmt = ChunkFormat(
            "text_completion",
            plan.spec.id,
            _fingerprint(plan.spec.version),
            chat=False,
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            id=new_id("cmpl"),
        )
        interval = body.stream_options.usage_interval_tokens if body.stream_options else None
        response = await stream_response(rt, request, principal, plan, fmt, interval)
        response.stream_headers.update(STREAM_CACHE_HEADERS)
        return response
    outcome, admission = await metered(rt, request, principal, plan)
    choices: list[dict[str, Any]] = []
    for prompt, result in zip(prompts, outcome.results, strict=True):
        picked = _best(result.choices, n) if ranked else list(result.choices)
        for choice in picked:
            text = prompt + choice.text if body.echo else choice.text
            choices.append(
                {
                    "index": len(choices),
                    "text": text,
                    "logprobs": _legacy_logprobs(choice) if body.logprobs is not None else None,
                    "finish_reason": choice.finish_reason,
                }
            )
    payload = {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": outcome.spec.id,
        "system_fingerprint": _fingerprint(outcome.spec.version),
        "choices": choices,
        "usage": usage(outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens),
    }
    return json_response(payload, headers=inference_headers(outcome, admission))


def _prompts(body: CompletionRequest) -> tuple[list[str], dict[str, str]]:
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt], {}
    if not prompt:
        raise InvalidRequest(
            "'prompt' must be a string or a non-empty array of strings.",
            code="invalid_value",
            param="prompt",
        )
    if all(isinstance(p, str) for p in prompt):
        return [str(p) for p in prompt], {}
    return [""], {"prompt": "token_input"}


def _best(choices: tuple[Generation, ...], n: int) -> list[Generation]:
    def mean_logprob(choice: Generation) -> float:
        items = choice.logprobs or ()
        return sum(i.logprob for i in items) / len(items) if items else 0.0

    return sorted(choices, key=mean_logprob, reverse=True)[:n]


def _legacy_logprobs(choice: Generation) -> dict[str, Any]:
    items: tuple[TokenLogprob, ...] = choice.logprobs or ()
    offsets, position = [], 0
    for item in items:
        offsets.append(position)
        position += len(item.token)
    return {
        "tokens": [i.token for i in items],
        "token_logprobs": [i.logprob for i in items],
        "top_logprobs": [{t.token: t.logprob for t in i.top_logprobs} for i in items],
        "text_offset": offsets,
    }
