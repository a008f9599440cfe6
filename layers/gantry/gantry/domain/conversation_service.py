"""Conversation use cases: create, read, list and delete, and one turn from lock to commit.

A turn is: take the conversation's lock (a conditional write; a post that finds it taken
waits briefly, then gets 409 `conversation_busy`), read the newest turns, plan the context,
fold turns into the summary if the strategy asks for it, run the reply, and commit the
user's message, the reply and the counters in one write that also releases the lock. The
model calls themselves are run by the caller (between admission and settlement), with the
plans this service returns.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from gantry.domain.conversations import (
    BUSY_RETRY_AFTER_SECONDS,
    BUSY_WAIT_SECONDS,
    DEFAULT_RETENTION_SECONDS,
    LOCK_SECONDS,
    MAX_RETENTION_SECONDS,
    MIN_RETENTION_SECONDS,
    SUMMARY_NOTE,
    CommittedTurn,
    ContextPlan,
    Conversation,
    ConversationBusy,
    ConversationStore,
    GenerationDefaults,
    History,
    Setup,
    StoredMessage,
    Summary,
    TokenTotals,
    Turn,
    Window,
    context_too_long,
    is_conversation_id,
    message_id,
    message_seq,
    message_tokens,
    new_conversation_id,
    plan_context,
    summary_request,
    summary_room,
    validate_content,
    validate_strategy,
)
from gantry.domain.errors import ContextLengthExceeded, InvalidRequest, NotFound
from gantry.domain.inference import GenerationOutcome, InferenceService, Plan, Sampling
from gantry.domain.keys import Principal
from gantry.domain.metadata import validate_metadata
from gantry.domain.registry import ModelSpec
from gantry.ports import Clock, Message, ModelProvider

# Summaries folded per turn before the context is cut like `truncate` (a summary that came
# out larger than planned); in practice one fold per overflow.
MAX_FOLDS = 2
REPLY_ENDPOINT = "conversations.messages"
SUMMARY_ENDPOINT = "conversations.summary"


@dataclass(frozen=True)
class NewConversation:
    model: str
    strategy: str
    system: str | None = None
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)
    metadata: dict[str, str] = field(default_factory=dict)
    retention_seconds: int = DEFAULT_RETENTION_SECONDS


@dataclass(frozen=True)
class MessagePage:
    conversation: Conversation
    messages: list[StoredMessage]
    has_more: bool


@dataclass(frozen=True)
class SummaryStep:
    """One summary call to run: it folds `turns` into the running summary."""

    plan: Plan[GenerationOutcome]
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Reply:
    """What the model produced for the turn; finish_reason None = interrupted."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass
class TurnInProgress:
    """A locked conversation and the state of its turn, from planning to commit."""

    conversation: Conversation
    holder: str
    spec: ModelSpec
    provider: ModelProvider
    window: Window
    sampling: Sampling
    user: StoredMessage
    system: Message | None
    history: History
    context: ContextPlan
    summary_cap: int
    summary_room: int
    pending: list[Turn] = field(default_factory=list)
    folds: int = 0
    summary_changed: bool = False
    summary_usage: TokenTotals = field(default_factory=TokenTotals)

    @property
    def number(self) -> int:
        return self.user.turn

    @property
    def reply_id(self) -> str:
        return message_id(self.conversation.id, self.user.seq + 1)


@dataclass(frozen=True)
class TurnResult:
    conversation: Conversation  # after the turn
    turn: CommittedTurn
    context: ContextPlan
    prompt_tokens: int  # the reply call's prompt, exactly
    summary_changed: bool
    summary_usage: TokenTotals


def not_found(conversation_id: str) -> NotFound:
    return NotFound(
        f"No conversation '{conversation_id}'. It may have expired or been deleted.",
        code="not_found",
    )


class ConversationService:
    def __init__(
        self,
        store: ConversationStore,
        inference: InferenceService,
        clock: Clock,
        *,
        busy_wait_seconds: float = BUSY_WAIT_SECONDS,
        lock_seconds: float = LOCK_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.inference = inference
        self.clock = clock
        self.busy_wait_seconds = busy_wait_seconds
        self.lock_seconds = lock_seconds
        self._sleep = sleep
        self._monotonic = monotonic

    # --- model ------------------------------------------------------------------------------

    def _model(self, model_id: str) -> tuple[ModelSpec, ModelProvider]:
        spec = self.inference.registry.for_capability(model_id, "chat")
        return spec, self.inference.provider(spec)

    @staticmethod
    def default_max_tokens(spec: ModelSpec) -> int:
        """A turn's max_tokens when neither the request nor the conversation sets one."""
        return max(1, min(spec.max_output_tokens, spec.context_window // 4))

    def _max_tokens(self, spec: ModelSpec, requested: int | None, param: str) -> int:
        if requested is None:
            return self.default_max_tokens(spec)
        if requested > spec.max_output_tokens:
            raise InvalidRequest(
                f"'{param}' is {requested}, but the model '{spec.id}' produces at most "
                f"{spec.max_output_tokens} tokens per response. Use a value from 1 to "
                f"{spec.max_output_tokens}.",
                code="invalid_value",
                param=param,
            )
        return requested

    # --- create, read, list, delete ---------------------------------------------------------

    def create(self, principal: Principal, new: NewConversation) -> tuple[Conversation, Setup]:
        strategy = validate_strategy(new.strategy)
        metadata = validate_metadata(new.metadata)
        if not MIN_RETENTION_SECONDS <= new.retention_seconds <= MAX_RETENTION_SECONDS:
            raise InvalidRequest(
                f"'retention_seconds' must be from {MIN_RETENTION_SECONDS} to "
                f"{MAX_RETENTION_SECONDS}.",
                code="invalid_value",
                param="retention_seconds",
            )
        spec, provider = self._model(new.model)
        max_tokens = self._max_tokens(spec, new.defaults.max_tokens, "defaults.max_tokens")
        if new.defaults.seed is not None and not spec.supports("seed"):
            raise InvalidRequest(
                f"The model '{spec.id}' does not support 'seed'.",
                code="unsupported_parameter",
                param="defaults.seed",
            )
        empty = provider.count_chat_tokens(spec, [])
        system_tokens = 0
        if new.system:
            system_tokens = message_tokens(
                lambda m: provider.count_chat_tokens(spec, m), Message("system", new.system), empty
            )
            window = Window(spec.id, spec.context_window, max_tokens, empty)
            if empty + system_tokens >= window.budget:
                raise context_too_long(window, empty + system_tokens, strategy, "system")
        now = self.clock.now()
        conversation = Conversation(
            id=new_conversation_id(),
            org_id=principal.org_id,
            key_id=principal.key_id,
            model=spec.id,
            strategy=strategy,
            defaults=new.defaults,
            created_at=now,
            expires_at=now + new.retention_seconds,
            retention_seconds=new.retention_seconds,
            system_tokens=system_tokens,
        )
        setup = Setup(new.system or None, metadata)
        self.store.create(conversation, setup)
        return conversation, setup

    def _owned(
        self, principal: Principal, conversation: Conversation | None, conversation_id: str
    ) -> Conversation:
        """The conversation if the caller's organization owns it and it has not expired
        (expiry is checked here: DynamoDB deletes expired items only eventually)."""
        if (
            conversation is None
            or conversation.org_id != principal.org_id
            or not conversation.live(self.clock.now())
        ):
            raise not_found(conversation_id)
        return conversation

    def get(self, principal: Principal, conversation_id: str) -> tuple[Conversation, Setup]:
        found = self.store.get_with_setup(conversation_id) if self._valid(conversation_id) else None
        conversation = self._owned(principal, found[0] if found else None, conversation_id)
        return conversation, found[1] if found else Setup()

    def messages(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        limit: int,
        after: str | None,
        order: str,
    ) -> MessagePage:
        found = self.store.get(conversation_id) if self._valid(conversation_id) else None
        conversation = self._owned(principal, found, conversation_id)
        after_seq = message_seq(conversation_id, after, "after") if after is not None else None
        items, has_more = self.store.messages(
            conversation_id, after_seq, limit, order == "asc", conversation.next_seq
        )
        return MessagePage(conversation, items, has_more)

    def delete(self, principal: Principal, conversation_id: str) -> None:
        valid = self._valid(conversation_id)
        if not valid or not self.store.delete(conversation_id, principal.org_id, self.clock.now()):
            raise not_found(conversation_id)

    @staticmethod
    def _valid(conversation_id: str) -> bool:
        return is_conversation_id(conversation_id)

    # --- a turn -----------------------------------------------------------------------------

    def begin_turn(
        self,
        principal: Principal,
        conversation_id: str,
        content: str,
        overrides: GenerationDefaults,
    ) -> TurnInProgress:
        """Lock the conversation, read what the context needs and plan it. Bad input and a
        context that cannot fit are refused here (or, on the exact count, by `reply_plan`),
        before any model call; the lock is released if they are."""
        validate_content(content)
        if not self._valid(conversation_id):
            raise not_found(conversation_id)
        holder = secrets.token_hex(8)
        conversation = self._lock(principal, conversation_id, holder)
        try:
            return self._prepare(conversation, holder, content, overrides)
        except BaseException:
            self.store.unlock(conversation_id, holder)
            raise

    def _lock(self, principal: Principal, conversation_id: str, holder: str) -> Conversation:
        deadline = self._monotonic() + self.busy_wait_seconds
        delay = 0.02
        while True:
            now = self.clock.now()
            try:
                found = self.store.lock(
                    conversation_id, principal.org_id, holder, now, now + self.lock_seconds
                )
            except ConversationBusy:
                if self._monotonic() + delay > deadline:
                    raise ConversationBusy(
                        "Another message to this conversation is being answered. Retry after "
                        "it completes (see Retry-After).",
                        retry_after=BUSY_RETRY_AFTER_SECONDS,
                    ) from None
                self._sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, 0.1)
                continue
            if found is None:
                raise not_found(conversation_id)
            return found

    def _prepare(
        self,
        conversation: Conversation,
        holder: str,
        content: str,
        overrides: GenerationDefaults,
    ) -> TurnInProgress:
        spec, provider = self._model(conversation.model)
        settings = overrides.over(conversation.defaults)
        param = "max_tokens" if overrides.max_tokens is not None else "defaults.max_tokens"
        max_tokens = self._max_tokens(spec, settings.max_tokens, param)

        def count(messages: Sequence[Message]) -> int:
            return provider.count_chat_tokens(spec, messages)

        empty = count([])
        window = Window(spec.id, spec.context_window, max_tokens, empty)
        user = StoredMessage(
            conversation.id,
            conversation.next_seq,
            "user",
            content,
            message_tokens(count, Message("user", content), empty),
            self.clock.now(),
        )
        strategy = conversation.strategy
        fixed = empty + conversation.system_tokens + user.tokens
        if fixed > window.budget:
            raise context_too_long(window, fixed, strategy, "content")
        if strategy == "summarize":
            first, hint, budget = conversation.summary_through + 1, 1, None
        else:
            first, budget = 1, window.budget - fixed
            hint = conversation.context_from if strategy == "truncate" else 1
        history = self.store.history(conversation, first, max(first, hint), budget)
        system = Message("system", history.system) if history.system else None
        note = count([Message("system", SUMMARY_NOTE)]) - empty
        cap, room = summary_room(window, spec.max_output_tokens, note)
        context = plan_context(
            strategy, window, system, conversation.system_tokens, history, user, room
        )
        return TurnInProgress(
            conversation=conversation,
            holder=holder,
            spec=spec,
            provider=provider,
            window=window,
            sampling=_sampling(settings, max_tokens),
            user=user,
            system=system,
            history=history,
            context=context,
            summary_cap=cap,
            summary_room=room,
            pending=list(context.fold),
        )

    def next_summary(self, turn: TurnInProgress) -> SummaryStep | None:
        """The next summary call the turn needs, or None when the context is ready."""
        while turn.pending:
            size = len(turn.pending)
            while size:
                chunk = tuple(turn.pending[:size])
                messages = summary_request(turn.history.summary, chunk)
                sampling = Sampling(max_tokens=turn.summary_cap, temperature=0.0)
                try:
                    plan = self.inference.plan_chat(turn.spec.id, messages, sampling)
                except ContextLengthExceeded:
                    size //= 2
                    continue
                return SummaryStep(replace(plan, endpoint=SUMMARY_ENDPOINT), chunk)
            # One turn too long to summarise within the window: it is left out.
            skipped = turn.pending.pop(0)
            previous = turn.history.summary
            text, tokens = (previous.text, previous.tokens) if previous else ("", 0)
            self._folded(turn, Summary(text, tokens, skipped.number), (skipped,))
        return None

    def add_summary(
        self, turn: TurnInProgress, step: SummaryStep, outcome: GenerationOutcome
    ) -> None:
        text = outcome.result.choices[0].text.strip()
        empty = turn.window.overhead
        tokens = message_tokens(
            lambda m: turn.provider.count_chat_tokens(turn.spec, m),
            Message("system", SUMMARY_NOTE + text),
            empty,
        )
        turn.summary_usage += TokenTotals.of(
            outcome.prompt_tokens, outcome.completion_tokens, outcome.cost_usd
        )
        del turn.pending[: len(step.turns)]
        self._folded(turn, Summary(text, tokens, step.turns[-1].number), step.turns)

    def _folded(self, turn: TurnInProgress, summary: Summary, turns: tuple[Turn, ...]) -> None:
        folded = {t.number for t in turns}
        remaining = tuple(t for t in turn.history.turns if t.number not in folded)
        turn.history = replace(turn.history, summary=summary, turns=remaining)
        turn.summary_changed = True
        if turn.pending:
            return
        turn.folds += 1
        turn.context = self._plan(turn, fold=turn.folds < MAX_FOLDS)
        turn.pending = list(turn.context.fold)

    def _plan(self, turn: TurnInProgress, fold: bool) -> ContextPlan:
        conversation = turn.conversation
        return plan_context(
            conversation.strategy,
            turn.window,
            turn.system,
            conversation.system_tokens,
            turn.history,
            turn.user,
            turn.summary_room,
            fold=fold,
        )

    def reply_plan(self, turn: TurnInProgress) -> Plan[GenerationOutcome]:
        """The reply call over the planned context. Estimates are additive; when the exact
        count says otherwise, the oldest kept turn goes (or, under `fail`, the turn fails)."""
        assert not turn.pending, "summaries first"
        while True:
            context = turn.context
            try:
                plan = self.inference.plan_chat(turn.spec.id, context.messages, turn.sampling)
            except ContextLengthExceeded as exc:
                counted = int((exc.details or {}).get("prompt_tokens", context.tokens))
                strategy = turn.conversation.strategy
                if strategy == "fail" or not context.kept:
                    param = "content" if not context.kept else None
                    raise context_too_long(turn.window, counted, strategy, param) from None
                turn.history = replace(turn.history, turns=context.kept[1:])
                turn.context = self._plan(turn, fold=False)
                continue
            return replace(plan, endpoint=REPLY_ENDPOINT)

    def commit(self, turn: TurnInProgress, reply: Reply) -> TurnResult:
        """Store the turn; the lock goes with it."""
        before = turn.conversation
        usage = turn.summary_usage + TokenTotals.of(
            reply.prompt_tokens, reply.completion_tokens, reply.cost_usd
        )
        tokens = message_tokens(
            lambda m: turn.provider.count_chat_tokens(turn.spec, m),
            Message("assistant", reply.text),
            turn.window.overhead,
        )
        stored = StoredMessage(
            before.id,
            turn.user.seq + 1,
            "assistant",
            reply.text,
            tokens,
            self.clock.now(),
            "completed" if reply.finish_reason is not None else "incomplete",
            reply.finish_reason,
            usage,
        )
        summary = turn.history.summary if turn.summary_changed else None
        committed = CommittedTurn(
            user=turn.user,
            reply=stored,
            usage=usage,
            context_tokens=reply.prompt_tokens + tokens,
            context_from=turn.context.first_turn,
            summary=summary,
        )
        current = turn.history.summary
        after = replace(
            before,
            next_seq=turn.user.seq + 2,
            turns=turn.number,
            usage=before.usage + usage,
            context_tokens=committed.context_tokens,
            context_from=committed.context_from,
            summary_through=current.through if current is not None else before.summary_through,
            summary_tokens=current.tokens if current is not None else before.summary_tokens,
        )
        if not self.store.commit(before, turn.holder, committed, after):
            if self.store.get(before.id) is None:
                raise not_found(before.id)
            raise ConversationBusy(
                "This turn held the conversation longer than its lock allows and another "
                "message was answered meanwhile; the reply was not stored. Send it again.",
                retry_after=BUSY_RETRY_AFTER_SECONDS,
            )
        return TurnResult(
            after,
            committed,
            turn.context,
            reply.prompt_tokens,
            turn.summary_changed,
            turn.summary_usage,
        )

    def abandon(self, turn: TurnInProgress) -> None:
        """Release the lock of a turn that failed before anything was stored."""
        self.store.unlock(turn.conversation.id, turn.holder)


def _sampling(settings: GenerationDefaults, max_tokens: int) -> Sampling:
    features = {"seed": "seed"} if settings.seed is not None else {}
    return Sampling(
        max_tokens=max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        presence_penalty=settings.presence_penalty,
        frequency_penalty=settings.frequency_penalty,
        stop=settings.stop or (),
        seed=settings.seed,
        features=features,
    )
