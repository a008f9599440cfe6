"""Cached outcomes as bytes: compact, exact (floats round-trip bit for bit), versioned."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

from gantry.domain.inference import (
    ClassificationOutcome,
    CompletionOutcome,
    EmbeddingOutcome,
    GenerationOutcome,
    Outcome,
)
from gantry.domain.registry import ModelSpec
from gantry.ports import (
    ClassificationResult,
    EmbeddingResult,
    Generation,
    GenerationResult,
    TokenLogprob,
    TopLogprob,
)

FORMAT = 1


def _generation_result(result: GenerationResult) -> dict[str, Any]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "choices": [
            {
                "text": c.text,
                "finish_reason": c.finish_reason,
                "completion_tokens": c.completion_tokens,
                "logprobs": None
                if c.logprobs is None
                else [
                    [t.token, t.logprob, [[top.token, top.logprob] for top in t.top_logprobs]]
                    for t in c.logprobs
                ],
            }
            for c in result.choices
        ],
    }


def _read_generation_result(raw: dict[str, Any]) -> GenerationResult:
    choices = []
    for c in raw["choices"]:
        logprobs = None
        if c["logprobs"] is not None:
            logprobs = tuple(
                TokenLogprob(token, logprob, tuple(TopLogprob(t, lp) for t, lp in tops))
                for token, logprob, tops in c["logprobs"]
            )
        choices.append(Generation(c["text"], c["finish_reason"], c["completion_tokens"], logprobs))
    return GenerationResult(tuple(choices), raw["prompt_tokens"])


def _vector(values: tuple[float, ...]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode()


def _read_vector(text: str) -> tuple[float, ...]:
    data = base64.b64decode(text)
    return struct.unpack(f"<{len(data) // 8}d", data)


def encode_outcome(outcome: Outcome) -> bytes:
    body: dict[str, Any] = {
        "format": FORMAT,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
    }
    if isinstance(outcome, GenerationOutcome):
        body["kind"] = "generation"
        body["result"] = _generation_result(outcome.result)
    elif isinstance(outcome, CompletionOutcome):
        body["kind"] = "completion"
        body["results"] = [_generation_result(r) for r in outcome.results]
    elif isinstance(outcome, EmbeddingOutcome):
        body["kind"] = "embedding"
        body["vectors"] = [_vector(v) for v in outcome.result.vectors]
        body["result_prompt_tokens"] = outcome.result.prompt_tokens
    elif isinstance(outcome, ClassificationOutcome):
        body["kind"] = "classification"
        body["scores"] = [list(s.items()) for s in outcome.result.scores]
        body["result_prompt_tokens"] = outcome.result.prompt_tokens
    else:
        raise TypeError(f"{type(outcome).__name__} is not cacheable")
    return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)


def decode_outcome(payload: bytes, spec: ModelSpec) -> Outcome | None:
    """The cached outcome, marked as served from the cache; None if unreadable."""
    try:
        body = json.loads(zlib.decompress(payload))
    except (zlib.error, ValueError):
        return None
    if body.get("format") != FORMAT:
        return None
    prompt, completion = body["prompt_tokens"], body["completion_tokens"]
    cached = {"cached_tokens": prompt}
    kind = body["kind"]
    if kind == "generation":
        result = _read_generation_result(body["result"])
        return GenerationOutcome(spec, prompt, completion, result, **cached)
    if kind == "completion":
        results = tuple(_read_generation_result(r) for r in body["results"])
        return CompletionOutcome(spec, prompt, completion, results, **cached)
    if kind == "embedding":
        vectors = tuple(_read_vector(v) for v in body["vectors"])
        embedded = EmbeddingResult(vectors, body["result_prompt_tokens"])
        return EmbeddingOutcome(spec, prompt, completion, embedded, **cached)
    if kind == "classification":
        scores = tuple(dict((label, score) for label, score in s) for s in body["scores"])
        classified = ClassificationResult(scores, body["result_prompt_tokens"])
        return ClassificationOutcome(spec, prompt, completion, classified, **cached)
    return None
