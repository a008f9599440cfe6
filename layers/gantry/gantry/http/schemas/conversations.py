"""/v1/conversations: server-side conversations with managed context windows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from gantry.domain.conversations import (
    DEFAULT_RETENTION_SECONDS,
    MAX_RETENTION_SECONDS,
    MIN_RETENTION_SECONDS,
    GenerationDefaults,
)
from gantry.domain.metadata import MAX_METADATA_KEYS, MAX_METADATA_VALUE_CHARS
from gantry.http.schemas.base import StrictRequest, WireModel
from gantry.http.schemas.chat import MaxTokens, Penalty, Stop, StreamOptions, Temperature, TopP

Strategy = Literal["truncate", "summarize", "fail"]


class GenerationFields(StrictRequest):
    max_tokens: MaxTokens | None = Field(
        None,
        description="Tokens the reply may take; the context gets the model's window minus "
        "this. Default: the model's max output, at most a quarter of its window.",
    )
    temperature: Temperature | None = None
    top_p: TopP | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stop: Stop | None = Field(None, description="Up to 4 sequences where generation stops.")
    seed: int | None = None

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: Stop | None) -> Stop | None:
        items = [value] if isinstance(value, str) else value or []
        if any(item == "" for item in items):
            raise ValueError("stop sequences must be non-empty strings")
        return value

    def generation(self) -> GenerationDefaults:
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        return GenerationDefaults(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            stop=tuple(stop) if stop is not None else None,
            seed=self.seed,
        )


class ConversationCreateRequest(StrictRequest):
    model: str = Field(examples=["gantry-small"])
    system: str | None = Field(None, description="The system prompt, kept in every context.")
    strategy: Strategy = Field(
        "truncate",
        description="What happens when the conversation outgrows the context window: "
        "`truncate` drops the oldest turns, `summarize` replaces them with a model-written "
        "summary, `fail` answers 400 context_length_exceeded.",
    )
    defaults: GenerationFields | None = Field(
        None, description="Generation parameters for every message (a message may override)."
    )
    metadata: dict[str, str] | None = Field(
        None,
        description=f"Up to {MAX_METADATA_KEYS} string pairs, values up to "
        f"{MAX_METADATA_VALUE_CHARS} characters.",
    )
    retention_seconds: Annotated[int, Field(ge=MIN_RETENTION_SECONDS, le=MAX_RETENTION_SECONDS)] = (
        Field(
            DEFAULT_RETENTION_SECONDS,
            description="The conversation and its messages are deleted this long after creation.",
        )
    )


class MessageCreateRequest(GenerationFields):
    content: str = Field(description="The user's message.", examples=["Hello!"])
    stream: bool | None = Field(None, description="Stream the reply as server-sent events.")
    stream_options: StreamOptions | None = None


# --- responses (documentation) -----------------------------------------------------------


class CostUsage(WireModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float


class Conversation(WireModel):
    id: str
    object: Literal["conversation"]
    created_at: int
    expires_at: int
    model: str
    system: str | None
    strategy: Strategy
    defaults: dict[str, Any]
    metadata: dict[str, str]
    retention_seconds: int
    turn_count: int
    message_count: int
    context_tokens: int = Field(description="Tokens of the managed context after the last turn.")
    summary: dict[str, int] | None = Field(
        description="`summarize`: the turns the summary covers and its tokens."
    )
    usage: CostUsage


class ConversationMessage(WireModel):
    id: str
    object: Literal["conversation.message"]
    conversation_id: str
    created_at: int
    turn: int
    role: Literal["user", "assistant"]
    content: str
    tokens: int
    status: Literal["completed", "incomplete"]
    finish_reason: str | None = None
    usage: CostUsage | None = Field(None, description="Replies: what the turn billed.")


class ConversationMessageList(WireModel):
    object: Literal["list"]
    data: list[ConversationMessage]
    first_id: str | None
    last_id: str | None
    has_more: bool


class TurnContext(WireModel):
    strategy: Strategy
    context_window: int
    max_tokens: int
    prompt_tokens: int
    first_turn: int = Field(description="The oldest turn sent verbatim.")
    truncated_turns: int = Field(description="Oldest turns left out (turns 1..N).")
    summarized_turns: int = Field(description="Oldest turns the summary stands for.")
    summary_tokens: int
    summary_updated: bool


class ConversationTurn(WireModel):
    id: str = Field(description="The reply's message id.")
    object: Literal["conversation.turn"]
    conversation_id: str
    model: str
    turn: int
    message: ConversationMessage
    reply: ConversationMessage
    usage: CostUsage = Field(description="This turn, summaries included.")
    cumulative_usage: CostUsage
    context: TurnContext


class ConversationDeleted(WireModel):
    id: str
    object: Literal["conversation.deleted"]
    deleted: bool
