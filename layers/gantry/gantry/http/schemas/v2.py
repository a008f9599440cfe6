"""The v2 envelope: content (`output`) and metadata never intermingled."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from gantry.http.schemas.base import WireModel


class V2Message(WireModel):
    role: Literal["assistant"]
    content: str


class V2Choice(WireModel):
    index: int
    message: V2Message
    finish_reason: str
    logprobs: dict[str, Any] | None = None


class V2Output(WireModel):
    choices: list[V2Choice]


class V2Usage(WireModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = Field(description="Prompt tokens served from the response cache.")
    cost_usd: float = Field(description="What this request was billed.")


class V2Model(WireModel):
    id: str
    version: str


class V2Cache(WireModel):
    status: Literal["HIT", "MISS", "BYPASS"]
    similarity: float | None = Field(None, description="Semantic hits: cosine similarity.")


class V2Metadata(WireModel):
    request_id: str
    processing_ms: int
    cache: V2Cache
    warnings: list[str] = Field(description="Deprecations that concern this request.")
    timing: dict[str, float] | None = Field(
        None, description="With ?verbosity=verbose: milliseconds per step."
    )


class V2ChatCompletion(WireModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    output: V2Output
    usage: V2Usage
    model: V2Model
    metadata: V2Metadata
