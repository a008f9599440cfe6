"""POST /v1/chat/completions and POST /v1/completions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from gantry.http.schemas.base import StrictRequest, Usage, WireModel

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
MaxTokens = Annotated[int, Field(ge=1, le=1_000_000)]
Stop = str | Annotated[list[str], Field(max_length=4)]


class TextPart(StrictRequest):
    type: Literal["text"]
    text: str


class ImagePart(StrictRequest):
    type: Literal["image_url", "input_audio", "file"]
    image_url: dict[str, Any] | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None


class ChatMessage(StrictRequest):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | ImagePart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class StreamOptions(StrictRequest):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None
    usage_interval_tokens: Annotated[int, Field(ge=1)] | None = None


class ResponseFormat(StrictRequest):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class SamplingFields(StrictRequest):
    temperature: Temperature | None = Field(
        None, description="0 is greedy (deterministic); up to 2 flattens the distribution."
    )
    top_p: TopP | None = Field(None, description="Nucleus sampling mass, in (0, 1].")
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stop: Stop | None = Field(None, description="Up to 4 sequences where generation stops.")
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    seed: int | None = Field(None, description="Same seed and parameters, same output.")
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: Annotated[str, Field(max_length=256)] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: Stop | None) -> Stop | None:
        items = [value] if isinstance(value, str) else value or []
        if any(item == "" for item in items):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isdigit():
                raise ValueError(f"keys must be token ids (non-negative integers), got '{key}'")
        return value


class ChatCompletionRequest(SamplingFields):
    model: str = Field(examples=["gantry-small"])
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: MaxTokens | None = Field(
        None, description="Deprecated alias of max_completion_tokens."
    )
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


class CompletionRequest(SamplingFields):
    model: str = Field(examples=["gantry-small"])
    prompt: str | list[str] | list[int] | list[list[int]] = Field(examples=["Once upon a time"])
    max_tokens: MaxTokens | None = Field(16, description="Defaults to 16, as in OpenAI's API.")
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    echo: bool | None = None
    best_of: Annotated[int, Field(ge=1, le=20)] | None = None
    suffix: str | None = None


# --- responses (documentation) -----------------------------------------------------------


class AssistantMessage(WireModel):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None


class ChatChoice(WireModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: dict[str, Any] | None = None


class ChatCompletion(WireModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(WireModel):
    index: int
    text: str
    finish_reason: str
    logprobs: dict[str, Any] | None = None


class Completion(WireModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage
