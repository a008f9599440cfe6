"""POST /v1/embeddings, /v1/classifications and /v1/moderations."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from gantry.http.schemas.base import StrictRequest, Usage, WireModel

Text = Annotated[str, Field(min_length=1)]


class EmbeddingRequest(StrictRequest):
    model: str = Field(examples=["gantry-embed-small"])
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string or an array of up to 2048 strings, none empty."
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None


class ClassificationRequest(StrictRequest):
    model: str = Field("gantry-classify", examples=["gantry-classify"])
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=2048)]
    labels: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=200)]],
        Field(min_length=2, max_length=100),
    ] = Field(examples=[["positive", "negative"]])
    user: Annotated[str, Field(max_length=256)] | None = None


class ModerationTextPart(StrictRequest):
    type: Literal["text"]
    text: str


class ModerationImagePart(StrictRequest):
    type: Literal["image_url"]
    image_url: dict[str, Any]


class ModerationRequest(StrictRequest):
    model: str | None = Field(None, examples=["gantry-moderation"])
    input: str | list[str] | list[ModerationTextPart | ModerationImagePart]


# --- responses (documentation) -----------------------------------------------------------


class Embedding(WireModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingList(WireModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage


class LabelScore(WireModel):
    label: str
    score: float


class Classification(WireModel):
    index: int
    label: str
    score: float
    scores: list[LabelScore]


class ClassificationList(WireModel):
    id: str
    object: Literal["classification"]
    created: int
    model: str
    results: list[Classification]
    usage: Usage


class ModerationResult(WireModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]


class Moderation(WireModel):
    id: str
    model: str
    results: list[ModerationResult]
    usage: Usage
