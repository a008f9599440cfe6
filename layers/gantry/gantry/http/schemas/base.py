"""Common base classes for wire models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StrictRequest(BaseModel):
    """A request body: unknown fields and lax type coercions are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class WireModel(BaseModel):
    """A response body (documentation only: routes return JSON directly for speed)."""

    model_config = ConfigDict(extra="allow")


class PromptTokensDetails(WireModel):
    cached_tokens: int


class Usage(WireModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = Field(
        default=None, description="On a cache hit: the prompt tokens served from the cache."
    )
