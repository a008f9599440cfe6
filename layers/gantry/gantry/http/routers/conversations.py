"""/v1/conversations: multi-turn state kept on the server, with context-window management
and per-turn and cumulative token tracking. Conversations belong to the caller's
organization; any other organization gets 404."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from gantry.domain.conversation_service import NewConversation
from gantry.domain.conversations import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Conversation,
    GenerationDefaults,
    Setup,
)
from gantry.http.body import JSONBodyRoute
from gantry.http.conversation_turns import message_object, take_turn
from gantry.http.deps import ConversationsReader, ConversationsWriter, CurrentRuntime
from gantry.http.responses import json_response
from gantry.http.schemas.conversations import (
    Conversation as ConversationBody,
)
from gantry.http.schemas.conversations import (
    ConversationCreateRequest,
    ConversationDeleted,
    ConversationMessageList,
    ConversationTurn,
    MessageCreateRequest,
)

router = APIRouter(prefix="/v1", tags=["conversations"], route_class=JSONBodyRoute)

# Plain `def` routes: the store is blocking I/O, so FastAPI runs them on a worker thread.


def conversation_object(conversation: Conversation, setup: Setup) -> dict[str, Any]:
    summary = None
    if conversation.strategy == "summarize":
        summary = {"turns": conversation.summary_through, "tokens": conversation.summary_tokens}
    return {
        "id": conversation.id,
        "object": "conversation",
        "created_at": int(conversation.created_at),
        "expires_at": int(conversation.expires_at),
        "model": conversation.model,
        "system": setup.system,
        "strategy": conversation.strategy,
        "defaults": conversation.defaults.as_dict(),
        "metadata": dict(setup.metadata),
        "retention_seconds": conversation.retention_seconds,
        "turn_count": conversation.turns,
        "message_count": conversation.next_seq - 1,
        "context_tokens": conversation.context_tokens,
        "summary": summary,
        "usage": conversation.usage.as_dict(),
    }


@router.post(
    "/conversations",
    response_model=ConversationBody,
    operation_id="conversations-create",
    summary="Create a conversation",
)
def create_conversation(
    body: ConversationCreateRequest, principal: ConversationsWriter, rt: CurrentRuntime
) -> Response:
    new = NewConversation(
        model=body.model,
        strategy=body.strategy,
        system=body.system,
        defaults=body.defaults.generation() if body.defaults else GenerationDefaults(),
        metadata=body.metadata or {},
        retention_seconds=body.retention_seconds,
    )
    conversation, setup = rt.conversations.create(principal, new)
    return json_response(conversation_object(conversation, setup))


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationBody,
    operation_id="conversations-retrieve",
    summary="Retrieve a conversation with its cumulative usage",
)
def retrieve_conversation(
    conversation_id: str, principal: ConversationsReader, rt: CurrentRuntime
) -> Response:
    conversation, setup = rt.conversations.get(principal, conversation_id)
    return json_response(conversation_object(conversation, setup))


@router.delete(
    "/conversations/{conversation_id}",
    response_model=ConversationDeleted,
    operation_id="conversations-delete",
    summary="Delete a conversation and all its messages",
)
def delete_conversation(
    conversation_id: str, principal: ConversationsWriter, rt: CurrentRuntime
) -> Response:
    rt.conversations.delete(principal, conversation_id)
    return json_response({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


@router.post(
    "/conversations/{conversation_id}/messages",
    response_model=ConversationTurn,
    operation_id="conversations-messages-create",
    summary="Add a user message and get the assistant's reply",
    description="Runs the model over the managed context and stores both messages. With "
    "`stream: true` the reply streams as chat.completion.chunk events (the chunks' id is "
    "the reply's message id) and is stored when the stream ends; an interrupted stream "
    "stores what was produced, marked `incomplete`. A message posted while another one to "
    "the same conversation is being answered waits briefly, then gets 409 "
    "`conversation_busy`.",
)
async def create_message(
    conversation_id: str,
    body: MessageCreateRequest,
    principal: ConversationsWriter,
    rt: CurrentRuntime,
    request: Request,
) -> Response:
    return await take_turn(rt, request, principal, conversation_id, body)


@router.get(
    "/conversations/{conversation_id}/messages",
    response_model=ConversationMessageList,
    operation_id="conversations-messages-list",
    summary="List a conversation's messages",
)
def list_messages(
    conversation_id: str,
    principal: ConversationsReader,
    rt: CurrentRuntime,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    after: Annotated[
        str | None, Query(max_length=64, description="A message id: the page starts after it.")
    ] = None,
    order: Annotated[
        Literal["asc", "desc"], Query(description="By position in the conversation.")
    ] = "desc",
) -> Response:
    page = rt.conversations.messages(
        principal, conversation_id, limit=limit, after=after, order=order
    )
    data = [message_object(message) for message in page.messages]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )
