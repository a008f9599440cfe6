"""One turn of a conversation over HTTP: the summary calls and the reply, each between
admission and settlement, buffered or streamed; then the turn is stored.

A buffered turn is stored before the response is sent. A streamed one is stored when the
stream ends: before `[DONE]` when it succeeds, or with what was produced (status
`incomplete`) when it fails or the client leaves. A turn that fails before its reply starts
stores nothing and releases the conversation.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from gantry.domain.conversation_service import (
    ConversationService,
    Reply,
    TurnInProgress,
    TurnResult,
)
from gantry.domain.conversations import StoredMessage
from gantry.domain.errors import InvalidRequest
from gantry.domain.keys import Principal
from gantry.http.errors import billing_id_of
from gantry.http.metering import metered
from gantry.http.responses import inference_headers, json_response
from gantry.http.schemas.conversations import MessageCreateRequest
from gantry.http.streaming import ChunkFormat, StreamResult, stream_response
from gantry.runtime import Runtime

logger = logging.getLogger("gantry.http")


async def _release(service: ConversationService, turn: TurnInProgress) -> None:
    """Give the conversation back after a failed turn (even when the request is cancelled);
    if even that fails, the lock expires by itself."""
    with anyio.CancelScope(shield=True):
        try:
            await run_in_threadpool(service.abandon, turn)
        except Exception:
            logger.warning("could not release conversation %s", turn.conversation.id, exc_info=True)


def message_object(message: StoredMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "object": "conversation.message",
        "conversation_id": message.conversation_id,
        "created_at": int(message.created_at),
        "turn": message.turn,
        "role": message.role,
        "content": message.content,
        "tokens": message.tokens,
        "status": message.status,
        "finish_reason": message.finish_reason,
        "usage": message.usage.as_dict() if message.usage is not None else None,
    }


def _context_headers(turn: TurnInProgress) -> dict[str, str]:
    """The context decisions, also for streams (whose body has no room for them)."""
    context = turn.context
    summary = context.summary
    return {
        "x-conversation-turn": str(turn.number),
        "x-context-truncated-turns": str(context.truncated_turns),
        "x-context-summarized-turns": str(context.summarized_turns),
        "x-context-summary-tokens": str(summary.tokens if summary is not None else 0),
    }


def _cost_header(cost_usd: float) -> str:
    return f"{cost_usd:.10f}".rstrip("0").rstrip(".") or "0"


def turn_object(turn: TurnInProgress, result: TurnResult) -> dict[str, Any]:
    committed, context = result.turn, result.context
    summary = context.summary
    return {
        "id": committed.reply.id,
        "object": "conversation.turn",
        "conversation_id": result.conversation.id,
        "model": turn.spec.id,
        "turn": turn.number,
        "message": message_object(committed.user),
        "reply": message_object(committed.reply),
        "usage": committed.usage.as_dict(),
        "cumulative_usage": result.conversation.usage.as_dict(),
        "context": {
            "strategy": result.conversation.strategy,
            "context_window": turn.window.context_window,
            "max_tokens": turn.window.max_tokens,
            "prompt_tokens": result.prompt_tokens,
            "first_turn": context.first_turn,
            "truncated_turns": context.truncated_turns,
            "summarized_turns": context.summarized_turns,
            "summary_tokens": summary.tokens if summary is not None else 0,
            "summary_updated": result.summary_changed,
        },
    }


async def take_turn(
    rt: Runtime,
    request: Request,
    principal: Principal,
    conversation_id: str,
    body: MessageCreateRequest,
) -> Response:
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.",
            code="invalid_value",
            param="stream_options",
        )
    service = rt.conversations
    turn = await run_in_threadpool(
        service.begin_turn, principal, conversation_id, body.content, body.generation()
    )
    billing_id = billing_id_of(request) or ""
    try:
        calls = 0
        while (step := service.next_summary(turn)) is not None:
            calls += 1
            summary_id = f"{billing_id}.summary{calls}"
            outcome, _ = await metered(rt, request, principal, step.plan, request_id=summary_id)
            service.add_summary(turn, step, outcome)
        plan = service.reply_plan(turn)
        if body.stream:
            options = body.stream_options
            fmt = ChunkFormat(
                "chat.completion.chunk",
                plan.spec.id,
                "fp_" + plan.spec.version.replace("-", ""),
                chat=True,
                include_usage=bool(options and options.include_usage),
                id=turn.reply_id,
            )

            def keep(result: StreamResult) -> None:
                reply = Reply(
                    result.text,
                    result.finish_reason,
                    result.prompt_tokens,
                    result.completion_tokens,
                    result.cost_usd,
                )
                service.commit(turn, reply)

            interval = options.usage_interval_tokens if options else None
            streamed = await stream_response(
                rt, request, principal, plan, fmt, interval, on_complete=keep
            )
            streamed.stream_headers.update(_context_headers(turn))
            return streamed
        outcome, admission = await metered(rt, request, principal, plan)
    except BaseException:
        await _release(service, turn)
        raise
    choice = outcome.result.choices[0]
    reply = Reply(
        choice.text,
        choice.finish_reason,
        outcome.prompt_tokens,
        outcome.completion_tokens,
        outcome.cost_usd,
    )
    try:
        result = await run_in_threadpool(service.commit, turn, reply)
    except BaseException:
        await _release(service, turn)
        raise
    headers = inference_headers(outcome, admission)
    headers["x-cost-usd"] = _cost_header(result.turn.usage.cost_usd)
    headers.update(_context_headers(turn))
    return json_response(turn_object(turn, result), headers=headers)
