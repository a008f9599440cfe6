"""Server-side conversations: records, validation, and context-window management.

Turn k of a conversation is the user's message (sequence number 2k-1) and the assistant's
reply (2k). Before each model call the context is rebuilt within a token budget, the model's
context window minus the turn's max_tokens, by the conversation's strategy:

* `truncate`: the system prompt, the new user message, and as many of the newest turns as
  fit; older turns are left out.
* `summarize`: the system prompt, a summary of the oldest turns kept as a system note, the
  turns since, and the new message. When they no longer fit, the oldest turns are folded
  into the summary (written by the same model) until the turns kept take at most half of
  the room left, so the summary is recomputed only when the context overflows again.
* `fail`: the whole conversation, or 400 `context_length_exceeded` with the sizes.

Token sizes are additive estimates (each message's tokens in a one-message prompt minus
the empty prompt's); the provider's exact count of the final prompt has the last word.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from gantry.domain.errors import Conflict, ContextLengthExceeded, InvalidRequest
from gantry.ports import Message

STRATEGIES = ("truncate", "summarize", "fail")


DEFAULT_RETENTION_SECONDS = 30 * 86_400
MIN_RETENTION_SECONDS = 60
MAX_RETENTION_SECONDS = 400 * 86_400

# A turn holds its conversation at most this long: the streaming function's timeout, after
# which a holder that died mid-turn can no longer be running.
LOCK_SECONDS = 900.0
# How long a post waits for a turn in progress before answering 409 conversation_busy.
BUSY_WAIT_SECONDS = 2.0
BUSY_RETRY_AFTER_SECONDS = 1.0

SUMMARY_MAX_TOKENS = 256
SUMMARY_NOTE = "Summary of the earlier conversation: "
SUMMARY_INSTRUCTIONS = (
    "You keep a running summary of a conversation between a user and an assistant. Write a "
    "short summary that keeps names, facts, decisions and open questions. Answer with the "
    "summary only."
)

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

_CONVERSATION_ID = re.compile(r"^conv_([0-9a-f]{24})$")
_MESSAGE_ID = re.compile(r"^msg_([0-9a-f]{24})_(\d{1,10})$")

TokenCounter = Callable[[Sequence[Message]], int]


class ConversationBusy(Conflict):
    """Another turn of the same conversation is in progress."""

    default_code = "conversation_busy"
    retryable = True


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationDefaults:
    """Generation parameters; None = not set (the next layer's value, or the model's)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None

    def over(self, base: GenerationDefaults) -> GenerationDefaults:
        """These values where set, `base`'s elsewhere."""
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(base, **{k: v for k, v in given.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GenerationDefaults:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known and v is not None}
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        return cls(**values)


@dataclass(frozen=True)
class TokenTotals:
    """Tokens and cost (integer nano-USD, so sums are exact)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nano: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> float:
        return self.cost_nano / 1e9

    def __add__(self, other: TokenTotals) -> TokenTotals:
        return TokenTotals(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_nano + other.cost_nano,
        )

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> TokenTotals:
        return cls(prompt_tokens, completion_tokens, round(cost_usd * 1e9))

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 9),
        }


@dataclass(frozen=True)
class Conversation:
    """The conversation's own record: settings, counters and the turn lock. Its system
    prompt and metadata are kept apart (`Setup`), as they never change."""

    id: str
    org_id: str
    key_id: str
    model: str
    strategy: str
    defaults: GenerationDefaults
    created_at: float
    expires_at: float
    retention_seconds: int
    system_tokens: int = 0
    next_seq: int = 1
    turns: int = 0
    usage: TokenTotals = field(default_factory=TokenTotals)
    context_tokens: int = 0
    context_from: int = 1  # the oldest turn the last context held verbatim
    summary_through: int = 0  # turns 1..summary_through are covered by the summary
    summary_tokens: int = 0

    def live(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class Setup:
    system: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredMessage:
    conversation_id: str
    seq: int
    role: str  # "user" | "assistant"
    content: str
    tokens: int
    created_at: float
    status: str = "completed"  # "incomplete": a streamed reply that was interrupted
    finish_reason: str | None = None
    usage: TokenTotals | None = None  # replies: everything this turn billed

    @property
    def id(self) -> str:
        return message_id(self.conversation_id, self.seq)

    @property
    def turn(self) -> int:
        return (self.seq + 1) // 2

    def as_message(self) -> Message:
        return Message(self.role, self.content)


@dataclass(frozen=True)
class Turn:
    user: StoredMessage
    reply: StoredMessage

    @property
    def number(self) -> int:
        return self.user.turn

    @property
    def tokens(self) -> int:
        return self.user.tokens + self.reply.tokens

    def messages(self) -> tuple[Message, Message]:
        return self.user.as_message(), self.reply.as_message()


@dataclass(frozen=True)
class Summary:
    """A model-written summary of turns 1..through, sent as a system note of `tokens`."""

    text: str
    tokens: int
    through: int

    def note(self) -> Message:
        return Message("system", SUMMARY_NOTE + self.text)


@dataclass(frozen=True)
class History:
    """What a turn reads: the system prompt, the summary, and the newest turns."""

    system: str | None
    summary: Summary | None
    turns: tuple[Turn, ...]  # oldest first
    complete: bool  # the turns reach back to the first turn asked for


@dataclass(frozen=True)
class CommittedTurn:
    """Everything a turn writes at once: its two messages and the conversation's counters."""

    user: StoredMessage
    reply: StoredMessage
    usage: TokenTotals
    context_tokens: int
    context_from: int
    summary: Summary | None  # the summary to store, when this turn rewrote it


class ConversationStore(Protocol):
    """Where conversations live (the port; kept here because it speaks only these records)."""

    def create(self, conversation: Conversation, setup: Setup) -> None: ...

    def get(self, conversation_id: str) -> Conversation | None: ...

    def get_with_setup(self, conversation_id: str) -> tuple[Conversation, Setup] | None: ...

    def lock(
        self, conversation_id: str, org_id: str, holder: str, now: float, until: float
    ) -> Conversation | None:
        """Take the turn lock of the organization's live conversation and return it (None
        if there is no such conversation); ConversationBusy while another holder has it."""
        ...

    def unlock(self, conversation_id: str, holder: str) -> None: ...

    def history(
        self, conversation: Conversation, first_turn: int, hint_turn: int, budget: int | None
    ) -> History:
        """The setup, the summary and the turns from `first_turn` on, read newest first and
        no further back than needed to exceed `budget` tokens (all of them if None).
        `hint_turn` is where the last context started, so one read usually suffices."""
        ...

    def commit(
        self, conversation: Conversation, holder: str, turn: CommittedTurn, after: Conversation
    ) -> bool:
        """Write the turn's messages and the conversation's new counters (`after`) and
        release the lock, all at once; False, writing nothing, if `holder` lost the lock."""
        ...

    def messages(
        self, conversation_id: str, after: int | None, limit: int, ascending: bool, below: int
    ) -> tuple[list[StoredMessage], bool]:
        """Up to `limit` messages (sequence numbers under `below`) after `after` in the
        order asked, and whether more follow."""
        ...

    def delete(self, conversation_id: str, org_id: str, now: float) -> bool:
        """Delete the organization's live conversation and everything in it; False if
        there is none."""
        ...


# --- ids ------------------------------------------------------------------------------------


def new_conversation_id() -> str:
    return f"conv_{secrets.token_hex(12)}"


def message_id(conversation_id: str, seq: int) -> str:
    return f"msg_{conversation_id.removeprefix('conv_')}_{seq}"


def is_conversation_id(value: str) -> bool:
    return bool(_CONVERSATION_ID.match(value))


def message_seq(conversation_id: str, value: str, param: str) -> int:
    """The sequence number a message id of this conversation names, or a 400."""
    match = _MESSAGE_ID.match(value)
    if match is None or f"conv_{match.group(1)}" != conversation_id:
        raise InvalidRequest(
            f"'{param}' must be the id of a message of this conversation "
            f"(msg_{conversation_id.removeprefix('conv_')}_<number>), got '{value}'.",
            code="invalid_value",
            param=param,
        )
    return int(match.group(2))


# --- validation -----------------------------------------------------------------------------


def validate_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InvalidRequest(
            f"Unknown context strategy '{strategy}'. Use one of: {', '.join(STRATEGIES)}.",
            code="invalid_value",
            param="strategy",
        )
    return strategy


def validate_content(content: str) -> str:
    if not content.strip():
        raise InvalidRequest(
            "'content' is empty. Send the user's message as a non-empty string.",
            code="invalid_value",
            param="content",
        )
    return content


def message_tokens(count: TokenCounter, message: Message, empty: int) -> int:
    """A message's share of a prompt: a one-message prompt minus the empty prompt."""
    return max(0, count([message]) - empty)


# --- context planning -----------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The room one turn has: the model's context window minus the turn's max_tokens."""

    model: str
    context_window: int
    max_tokens: int
    overhead: int  # tokens of a chat prompt with no messages at all

    @property
    def budget(self) -> int:
        return self.context_window - self.max_tokens


@dataclass(frozen=True)
class ContextPlan:
    """The messages for the model, or (`fold`) the turns to summarise before planning again."""

    messages: tuple[Message, ...]
    kept: tuple[Turn, ...]
    first_turn: int  # oldest turn kept verbatim (the new turn's number if none)
    summary: Summary | None
    tokens: int  # estimated prompt tokens
    fold: tuple[Turn, ...] = ()

    @property
    def summarized_turns(self) -> int:
        return self.summary.through if self.summary is not None else 0

    @property
    def truncated_turns(self) -> int:
        """Older turns neither in the context nor in its summary."""
        return self.first_turn - 1 - self.summarized_turns


def context_too_long(
    window: Window, prompt_tokens: int, strategy: str, param: str | None
) -> ContextLengthExceeded:
    if param == "content":
        advice = "Send a shorter message, a shorter system prompt, or lower max_tokens."
    else:
        advice = (
            "Start a new conversation, lower max_tokens, or use the 'truncate' or "
            "'summarize' strategy."
        )
    return ContextLengthExceeded(
        f"This conversation's context needs {prompt_tokens} tokens for the prompt and "
        f"{window.max_tokens} for the reply, but the model '{window.model}' has a context "
        f"window of {window.context_window} tokens (strategy '{strategy}'). {advice}",
        param=param,
        details={
            "prompt_tokens": prompt_tokens,
            "max_tokens": window.max_tokens,
            "context_window": window.context_window,
            "strategy": strategy,
        },
    )


def plan_context(
    strategy: str,
    window: Window,
    system: Message | None,
    system_tokens: int,
    history: History,
    user: StoredMessage,
    summary_room: int,
    fold: bool = True,
) -> ContextPlan:
    """Pick the context for the next turn (see the module docstring).

    `summary_room` is what a summary note may take at most; `fold=False` plans without
    folding (the newest turns that fit stay, the summary as it is), the fallback when a
    summary came out larger than planned."""
    summary = history.summary if strategy == "summarize" else None
    fixed = window.overhead + system_tokens + user.tokens
    if fixed > window.budget:
        raise context_too_long(window, fixed, strategy, "content")
    turns = history.turns
    total = sum(t.tokens for t in turns)
    current = summary.tokens if summary is not None else 0

    if strategy == "fail":
        if not history.complete or fixed + total > window.budget:
            raise context_too_long(window, fixed + total, strategy, None)
        return _plan(system, summary, turns, user, fixed + total)

    if strategy == "summarize" and fixed + current + total > window.budget:
        room = window.budget - fixed - summary_room
        if fold and room >= 0:
            kept = _newest_within(turns, room // 2)
            folded = turns[: len(turns) - len(kept)]
            if folded:
                return ContextPlan((), kept, _first(kept, user), summary, 0, fold=folded)
        if current > window.budget - fixed:
            summary, current = None, 0

    kept = _newest_within(turns, window.budget - fixed - current)
    return _plan(system, summary, kept, user, fixed + current + sum(t.tokens for t in kept))


def _newest_within(turns: Sequence[Turn], room: int) -> tuple[Turn, ...]:
    used, count = 0, 0
    for turn in reversed(turns):
        if used + turn.tokens > room:
            break
        used += turn.tokens
        count += 1
    return tuple(turns[len(turns) - count :])


def _first(kept: Sequence[Turn], user: StoredMessage) -> int:
    return kept[0].number if kept else user.turn


def _plan(
    system: Message | None,
    summary: Summary | None,
    kept: Sequence[Turn],
    user: StoredMessage,
    tokens: int,
) -> ContextPlan:
    messages: list[Message] = [system] if system is not None else []
    if summary is not None:
        messages.append(summary.note())
    for turn in kept:
        messages.extend(turn.messages())
    messages.append(user.as_message())
    return ContextPlan(tuple(messages), tuple(kept), _first(kept, user), summary, tokens)


def summary_room(window: Window, max_output_tokens: int, note_tokens: int) -> tuple[int, int]:
    """(max_tokens of a summary call, the most its note may take in a context)."""
    cap = max(1, min(SUMMARY_MAX_TOKENS, max_output_tokens, window.budget // 4))
    return cap, cap + note_tokens


def summary_request(previous: Summary | None, turns: Sequence[Turn]) -> list[Message]:
    """The prompt that folds `turns` into the running summary."""
    parts = []
    if previous is not None:
        parts.append(f"Summary so far: {previous.text}\n")
    parts.append("New turns:")
    for turn in turns:
        for message in turn.messages():
            parts.append(f"{message.role}: {message.content}")
    parts.append("\nWrite the updated summary.")
    return [Message("system", SUMMARY_INSTRUCTIONS), Message("user", "\n".join(parts))]


def pair_turns(messages: Sequence[StoredMessage]) -> list[Turn]:
    """Whole turns from messages in any order; a turn missing a half is left out."""
    by_seq = {m.seq: m for m in messages}
    turns = []
    for seq in sorted(by_seq):
        if seq % 2 == 1 and seq + 1 in by_seq:
            turns.append(Turn(by_seq[seq], by_seq[seq + 1]))
    return turns
