"""Common base classes for wire models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictRequest(BaseModel):
    """A request body: unknown fields and lax type coercions are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class WireModel(BaseModel):
    """A response body (documentation only: routes return JSON directly for speed)."""

    model_config = ConfigDict(extra="allow")


class Usage(WireModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
