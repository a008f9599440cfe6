"""GET /v1/models."""

from __future__ import annotations

from typing import Literal

from gantry.http.schemas.base import WireModel


class Pricing(WireModel):
    input_per_million: float
    output_per_million: float
    cached_input_per_million: float = 0.0
    cached_output_per_million: float = 0.0
    currency: Literal["USD"]


class Model(WireModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    version: str
    description: str
    context_window: int
    max_output_tokens: int
    pricing: Pricing
    capabilities: list[str]
    tokenizer: str
    embedding_dimensions: int | None
    deprecation_date: str | None
    sunset_date: str | None
    replacement: str | None


class ModelList(WireModel):
    object: Literal["list"]
    data: list[Model]
