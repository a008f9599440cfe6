"""Request bodies for, and parsed responses from, an OpenAI-compatible server.

Parsing is strict about what Gantry needs (choices with text, vectors with the right count)
and lenient about the rest; anything unusable is `model_output_invalid`. Usage comes from
the server's `usage`; a server that omits it is counted with the model's tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gantry.adapters.openai_errors import invalid_output
from gantry.domain.registry import ModelSpec
from gantry.ports import (
    Generation,
    GenerationResult,
    Message,
    ModerationVerdict,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
)

FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls", "function_call"}


def _sampling(spec: ModelSpec, params: SamplingParams) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": spec.provider_model_id,
        str(spec.provider_options.get("max_tokens_field", "max_tokens")): params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
    }
    if params.presence_penalty:
        body["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        body["frequency_penalty"] = params.frequency_penalty
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if params.n != 1:
        body["n"] = params.n
    if params.logit_bias:
        body["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
    return body


def _stream_fields(spec: ModelSpec, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    body["stream"] = stream
    if stream and spec.provider_options.get("stream_usage", True):
        body["stream_options"] = {"include_usage": True}
    return body


def chat_body(
    spec: ModelSpec, messages: Sequence[Message], params: SamplingParams, stream: bool
) -> dict[str, Any]:
    wire = []
    for message in messages:
        item = {"role": message.role, "content": message.content}
        if message.name:
            item["name"] = message.name
        wire.append(item)
    body = {**_sampling(spec, params), "messages": wire}
    if params.logprobs:
        body["logprobs"] = True
        if params.top_logprobs:
            body["top_logprobs"] = params.top_logprobs
    return _stream_fields(spec, body, stream)


def completion_body(
    spec: ModelSpec, prompt: str, params: SamplingParams, stream: bool
) -> dict[str, Any]:
    body = {**_sampling(spec, params), "prompt": prompt}
    if params.logprobs:
        body["logprobs"] = params.top_logprobs
    return _stream_fields(spec, body, stream)


def split_tokens(total: int, weights: Sequence[int]) -> list[int]:
    """`total` shared in proportion to `weights` (largest remainders), summing exactly."""
    if not weights:
        return []
    weight_sum = sum(weights)
    if weight_sum <= 0:
        shares = [total // len(weights)] * len(weights)
        shares[0] += total - sum(shares)
        return shares
    exact = [total * w / weight_sum for w in weights]
    shares = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def finish_reason(value: Any) -> str:
    return value if value in FINISH_REASONS else "stop"


def _usage(payload: Mapping[str, Any]) -> tuple[int | None, int | None]:
    usage = payload.get("usage")
    if not isinstance(usage, Mapping):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


def parse_generation(
    spec: ModelSpec,
    payload: Any,
    chat: bool,
    count: Callable[[str], int],
    prompt_tokens: Callable[[], int],
) -> GenerationResult:
    """A chat completion or text completion body as a result; `prompt_tokens` and `count`
    stand in for the server's usage when it reports none."""
    if not isinstance(payload, Mapping):
        raise invalid_output(spec, "the body is not a JSON object")
    raw = payload.get("choices")
    if not isinstance(raw, list) or not raw:
        raise invalid_output(spec, "no choices")
    parsed = sorted(
        (_choice(spec, choice, position, chat) for position, choice in enumerate(raw)),
        key=lambda c: c[0],
    )
    reported_prompt, reported_completion = _usage(payload)
    counted = [count(generation.text) for _, generation in parsed]
    completion = reported_completion if reported_completion is not None else sum(counted)
    shares = split_tokens(completion, counted) if len(parsed) > 1 else [completion]
    return GenerationResult(
        tuple(
            replace(generation, completion_tokens=share)
            for (_, generation), share in zip(parsed, shares, strict=True)
        ),
        reported_prompt if reported_prompt is not None else prompt_tokens(),
    )


def _choice(spec: ModelSpec, choice: Any, position: int, chat: bool) -> tuple[int, Generation]:
    if not isinstance(choice, Mapping):
        raise invalid_output(spec, "a choice is not an object")
    if chat:
        message = choice.get("message")
        if not isinstance(message, Mapping):
            raise invalid_output(spec, "a choice has no message")
        text = message.get("content")
    else:
        text = choice.get("text")
    text = "" if text is None else text
    if not isinstance(text, str):
        raise invalid_output(spec, "a choice's text is not a string")
    index = choice.get("index", position)
    generation = Generation(
        text=text,
        finish_reason=finish_reason(choice.get("finish_reason")),
        completion_tokens=0,
        logprobs=_logprobs(choice.get("logprobs"), chat),
    )
    return (index if isinstance(index, int) else position), generation


def _logprobs(raw: Any, chat: bool) -> tuple[TokenLogprob, ...] | None:
    if not isinstance(raw, Mapping):
        return None
    if chat:
        content = raw.get("content")
        if not isinstance(content, list):
            return None
        return tuple(
            TokenLogprob(
                token=str(item.get("token", "")),
                logprob=float(item.get("logprob", 0.0)),
                top_logprobs=tuple(
                    TopLogprob(str(top.get("token", "")), float(top.get("logprob", 0.0)))
                    for top in item.get("top_logprobs") or ()
                    if isinstance(top, Mapping)
                ),
            )
            for item in content
            if isinstance(item, Mapping)
        )
    tokens, values = raw.get("tokens"), raw.get("token_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list):
        return None
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    return tuple(
        TokenLogprob(
            token=str(token),
            logprob=float(value or 0.0),
            top_logprobs=tuple(TopLogprob(str(t), float(lp)) for t, lp in (top or {}).items()),
        )
        for token, value, top in zip(tokens, values, tops, strict=False)
    )


def parse_embeddings(
    spec: ModelSpec, payload: Any, expected: int
) -> tuple[list[list[float]], int | None]:
    if not isinstance(payload, Mapping) or not isinstance(payload.get("data"), list):
        raise invalid_output(spec, "no data")
    data = payload["data"]
    if len(data) != expected:
        raise invalid_output(spec, f"{len(data)} embeddings for {expected} inputs")
    ordered: list[list[float] | None] = [None] * expected
    for position, item in enumerate(data):
        if not isinstance(item, Mapping) or not isinstance(item.get("embedding"), list):
            raise invalid_output(spec, "an embedding is not a list of numbers")
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < expected or ordered[index]:
            raise invalid_output(spec, "embedding indexes do not match the inputs")
        vector = item["embedding"]
        if not vector or not all(isinstance(x, int | float) for x in vector):
            raise invalid_output(spec, "an embedding is not a list of numbers")
        ordered[index] = [float(x) for x in vector]
    prompt, _ = _usage(payload)
    return [v for v in ordered if v is not None], prompt


def parse_moderation(spec: ModelSpec, payload: Any, expected: int) -> list[ModerationVerdict]:
    results = payload.get("results") if isinstance(payload, Mapping) else None
    if not isinstance(results, list) or len(results) != expected:
        raise invalid_output(spec, "moderation results do not match the inputs")
    verdicts = []
    for result in results:
        if not isinstance(result, Mapping):
            raise invalid_output(spec, "a moderation result is not an object")
        categories = result.get("categories")
        scores = result.get("category_scores")
        if not isinstance(categories, Mapping) or not isinstance(scores, Mapping):
            raise invalid_output(spec, "a moderation result has no categories")
        verdicts.append(
            ModerationVerdict(
                flagged=bool(result.get("flagged")),
                categories={str(k): bool(v) for k, v in categories.items()},
                category_scores={str(k): float(v or 0.0) for k, v in scores.items()},
            )
        )
    return verdicts
