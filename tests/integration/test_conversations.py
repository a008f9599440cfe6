"""/v1/conversations over HTTP: the lifecycle, usage, listing, bad input, owner isolation,
expiry and the turn lock."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.adapters.aws import client
from gantry.domain.conversation_service import ConversationService
from gantry.runtime import Runtime
from tests.conftest import FakeClock, assert_error
from tests.conversation_support import (
    CONVERSATIONS,
    all_messages,
    caller,
    create,
    say,
    turn,
)
from tests.integration.test_limits import new_key
from tests.integration.test_limits_settlement import scan


def url(conversation_id: str, suffix: str = "") -> str:
    return f"{CONVERSATIONS}/{conversation_id}{suffix}"


def stored(runtime: Runtime, conversation_id: str) -> list[dict[str, Any]]:
    """Every item of the conversation as DynamoDB holds it."""
    response = client("dynamodb", runtime.settings).query(
        TableName=runtime.settings.conversations_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"CONV#{conversation_id}"}},
        ConsistentRead=True,
    )
    items: list[dict[str, Any]] = response["Items"]
    return items


# --- the lifecycle ---------------------------------------------------------------------------


def test_create_talk_read_list_delete(app_client: TestClient, runtime: Runtime) -> None:
    who = caller(runtime)
    created = create(
        app_client,
        who,
        system="Answer briefly.",
        strategy="truncate",
        defaults={"max_tokens": 12, "temperature": 0.7, "seed": 5, "stop": ["\n\n"]},
        metadata={"customer": "acme", "channel": "web"},
        retention_seconds=3600,
    )
    cid = created["id"]
    assert cid.startswith("conv_")
    assert created["object"] == "conversation"
    assert created["model"] == "gantry-small"
    assert created["system"] == "Answer briefly."
    assert created["defaults"] == {
        "max_tokens": 12,
        "temperature": 0.7,
        "seed": 5,
        "stop": ["\n\n"],
    }
    assert created["metadata"] == {"customer": "acme", "channel": "web"}
    assert created["expires_at"] == created["created_at"] + 3600
    assert created["turn_count"] == created["message_count"] == created["context_tokens"] == 0

    first = turn(app_client, who, cid, "Tell me about the weather in the mountains.")
    assert first["object"] == "conversation.turn"
    assert first["turn"] == 1
    assert first["message"]["role"] == "user"
    assert first["message"]["content"] == "Tell me about the weather in the mountains."
    reply = first["reply"]
    assert reply["role"] == "assistant" and reply["content"]
    assert reply["status"] == "completed" and reply["finish_reason"] in ("stop", "length")
    assert first["id"] == reply["id"] == f"msg_{cid[5:]}_2"
    assert first["usage"]["completion_tokens"] <= 12
    assert first["usage"] == reply["usage"] == first["cumulative_usage"]
    assert first["context"]["prompt_tokens"] == first["usage"]["prompt_tokens"]
    assert first["context"]["max_tokens"] == 12
    second = turn(app_client, who, cid, "And in the valleys?", max_tokens=5)
    assert second["usage"]["completion_tokens"] <= 5
    assert second["context"]["prompt_tokens"] > first["context"]["prompt_tokens"]

    read = app_client.get(url(cid), headers=who.headers).json()
    assert read["turn_count"] == 2 and read["message_count"] == 4
    total = {
        k: first["usage"][k] + second["usage"][k]
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    assert {k: read["usage"][k] for k in total} == total
    assert read["usage"]["cost_usd"] == pytest.approx(
        first["usage"]["cost_usd"] + second["usage"]["cost_usd"]
    )
    assert read["usage"] == second["cumulative_usage"]
    assert read["context_tokens"] == second["context"]["prompt_tokens"] + second["reply"]["tokens"]
    assert read["metadata"] == {"customer": "acme", "channel": "web"}

    listed = all_messages(app_client, who, cid)
    assert [m["role"] for m in listed] == ["user", "assistant", "user", "assistant"]
    assert listed[1] == first["reply"] and listed[2] == second["message"]

    deleted = app_client.delete(url(cid), headers=who.headers)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": cid, "object": "conversation.deleted", "deleted": True}
    assert stored(runtime, cid) == []
    assert_error(app_client.get(url(cid), headers=who.headers), 404, "not_found")
    assert_error(say(app_client, who, cid, "still there?"), 404, "not_found")
    assert_error(app_client.delete(url(cid), headers=who.headers), 404, "not_found")


def test_each_model_call_is_settled_under_the_conversation_endpoint(
    app_client: TestClient, runtime: Runtime
) -> None:
    who = caller(runtime)
    cid = create(app_client, who, defaults={"max_tokens": 8})["id"]
    turns = [turn(app_client, who, cid, f"Question number {n} about bread.") for n in range(3)]
    ledger = scan(runtime, "REQ#", who.record.key_id)
    assert len(ledger) == 3
    assert {item["endpoint"]["S"] for item in ledger} == {"conversations.messages"}
    assert sum(int(item["prompt_tokens"]["N"]) for item in ledger) == sum(
        t["usage"]["prompt_tokens"] for t in turns
    )
    assert sum(int(item["completion_tokens"]["N"]) for item in ledger) == sum(
        t["usage"]["completion_tokens"] for t in turns
    )


def test_messages_are_separate_items(app_client: TestClient, runtime: Runtime) -> None:
    who = caller(runtime)
    cid = create(app_client, who, system="Be kind.", metadata={"a": "b"})["id"]
    for n in range(3):
        turn(app_client, who, cid, f"Message {n}", max_tokens=4)
    keys = sorted(item["sk"]["S"] for item in stored(runtime, cid))
    assert keys == ["META", *(f"MSG#{seq:010d}" for seq in range(1, 7)), "SETUP"]
    meta = next(item for item in stored(runtime, cid) if item["sk"]["S"] == "META")
    assert "lk" not in meta  # the lock went with the last commit
    assert all("expires_at" in item for item in stored(runtime, cid))


# --- listing -----------------------------------------------------------------------------


def test_pagination_in_both_orders(app_client: TestClient, runtime: Runtime) -> None:
    who = caller(runtime)
    cid = create(app_client, who, model="gantry-echo")["id"]
    for n in range(5):
        turn(app_client, who, cid, f"m{n}")
    ids = [f"msg_{cid[5:]}_{seq}" for seq in range(1, 11)]

    def page(**params: Any) -> dict[str, Any]:
        response = app_client.get(url(cid, "/messages"), params=params, headers=who.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    first = page(order="asc", limit=4)
    assert first["object"] == "list"
    assert [m["id"] for m in first["data"]] == ids[:4]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (ids[0], ids[3], True)
    second = page(order="asc", limit=4, after=first["last_id"])
    assert [m["id"] for m in second["data"]] == ids[4:8]
    last = page(order="asc", limit=4, after=second["last_id"])
    assert [m["id"] for m in last["data"]] == ids[8:] and last["has_more"] is False

    newest = page(limit=3)  # desc by default
    assert [m["id"] for m in newest["data"]] == ids[::-1][:3] and newest["has_more"] is True
    older = page(limit=10, after=newest["last_id"])
    assert [m["id"] for m in older["data"]] == ids[::-1][3:] and older["has_more"] is False
    assert page(order="asc", after=ids[-1])["data"] == []
    assert [m["content"] for m in page(order="asc", limit=2)["data"]] == ["m0", "m0"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "msg_nonsense"}, "after"),
        ({"after": "msg_" + "cd" * 12 + "_1"}, "after"),  # another conversation's message
    ],
)
def test_bad_list_parameters(
    app_client: TestClient, runtime: Runtime, params: dict[str, Any], param: str
) -> None:
    who = caller(runtime)
    cid = create(app_client, who)["id"]
    response = app_client.get(url(cid, "/messages"), params=params, headers=who.headers)
    assert_error(response, 400, "invalid_value", param)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"strategy": "forget"}, "invalid_value", "strategy"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_value", "metadata"),
        ({"metadata": {"note": "x" * 513}}, "invalid_value", "metadata.note"),
        ({"metadata": {"n": 1}}, "invalid_type", "metadata.n"),
        ({"retention_seconds": 10}, "invalid_value", "retention_seconds"),
        ({"defaults": {"max_tokens": 5000}}, "invalid_value", "defaults.max_tokens"),
        ({"defaults": {"temperature": 3}}, "invalid_value", "defaults.temperature"),
        ({"defaults": {"stop": [""]}}, "invalid_value", "defaults.stop"),
        ({"system": "word " * 4000}, "context_length_exceeded", "system"),
        ({"colour": "blue"}, "unknown_parameter", "colour"),
    ],
)
def test_bad_conversations_are_refused(
    app_client: TestClient, runtime: Runtime, body: dict[str, Any], code: str, param: str
) -> None:
    who = caller(runtime)
    payload = {"model": "gantry-small", **body}
    response = app_client.post(CONVERSATIONS, json=payload, headers=who.headers)
    assert_error(response, 400, code, param)


def test_unknown_and_unsuitable_models(app_client: TestClient, runtime: Runtime) -> None:
    who = caller(runtime)
    response = app_client.post(CONVERSATIONS, json={"model": "nope"}, headers=who.headers)
    assert_error(response, 404, "model_not_found", "model")
    response = app_client.post(
        CONVERSATIONS, json={"model": "gantry-embed-small"}, headers=who.headers
    )
    assert_error(response, 400, "model_not_supported", "model")
    response = app_client.post(CONVERSATIONS, json={}, headers=who.headers)
    assert_error(response, 400, "missing_required_parameter", "model")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"content": ""}, "invalid_value", "content"),
        ({"content": "  \n "}, "invalid_value", "content"),
        ({}, "missing_required_parameter", "content"),
        ({"content": 5}, "invalid_type", "content"),
        ({"content": "hi", "max_tokens": 0}, "invalid_value", "max_tokens"),
        ({"content": "hi", "max_tokens": 2000}, "invalid_value", "max_tokens"),
        ({"content": "hi", "stream_options": {}}, "invalid_value", "stream_options"),
        ({"content": "hi", "role": "system"}, "unknown_parameter", "role"),
    ],
)
def test_bad_messages_are_refused_and_store_nothing(
    app_client: TestClient, runtime: Runtime, body: dict[str, Any], code: str, param: str
) -> None:
    who = caller(runtime)
    cid = create(app_client, who)["id"]
    response = app_client.post(url(cid, "/messages"), json=body, headers=who.headers)
    assert_error(response, 400, code, param)
    assert all_messages(app_client, who, cid) == []
    assert turn(app_client, who, cid, "now a good one", max_tokens=3)["turn"] == 1


@pytest.mark.parametrize("cid", ["conv_" + "0" * 24, "conv_nonsense", "anything"])
def test_unknown_conversations_are_404_everywhere(
    app_client: TestClient, runtime: Runtime, cid: str
) -> None:
    who = caller(runtime)
    assert_error(app_client.get(url(cid), headers=who.headers), 404, "not_found")
    assert_error(app_client.get(url(cid, "/messages"), headers=who.headers), 404, "not_found")
    assert_error(say(app_client, who, cid, "hello"), 404, "not_found")
    assert_error(app_client.delete(url(cid), headers=who.headers), 404, "not_found")


# --- owners and scopes -------------------------------------------------------------------


def test_another_organization_gets_404_on_every_route(
    app_client: TestClient, runtime: Runtime
) -> None:
    owner, stranger = caller(runtime), caller(runtime)
    cid = create(app_client, owner)["id"]
    turn(app_client, owner, cid, "private matters", max_tokens=3)
    assert_error(app_client.get(url(cid), headers=stranger.headers), 404, "not_found")
    assert_error(app_client.get(url(cid, "/messages"), headers=stranger.headers), 404, "not_found")
    assert_error(say(app_client, stranger, cid, "let me in"), 404, "not_found")
    assert_error(app_client.delete(url(cid), headers=stranger.headers), 404, "not_found")
    # Nothing the stranger did changed the conversation.
    assert app_client.get(url(cid), headers=owner.headers).json()["message_count"] == 2


def test_a_read_only_key_reads_but_cannot_post(app_client: TestClient, runtime: Runtime) -> None:
    owner = caller(runtime)
    reader = new_key(runtime, owner.record.org_id, scopes=("conversations:read",))
    cid = create(app_client, owner)["id"]
    assert app_client.get(url(cid), headers=reader.headers).status_code == 200
    assert app_client.get(url(cid, "/messages"), headers=reader.headers).status_code == 200
    for response in (
        say(app_client, reader, cid, "hello"),
        app_client.post(CONVERSATIONS, json={"model": "gantry-small"}, headers=reader.headers),
        app_client.delete(url(cid), headers=reader.headers),
    ):
        error = assert_error(response, 403, "insufficient_scope")
        assert error["details"] == {"required_scope": "conversations:write"}


# --- expiry ------------------------------------------------------------------------------


def test_expired_conversations_are_404_before_dynamodb_deletes_them(
    app_client: TestClient, runtime: Runtime, clock: FakeClock
) -> None:
    who = caller(runtime)
    cid = create(app_client, who, retention_seconds=60)["id"]
    turn(app_client, who, cid, "quick question", max_tokens=3)
    clock.advance(59)
    assert app_client.get(url(cid), headers=who.headers).status_code == 200
    clock.advance(2)
    assert_error(app_client.get(url(cid), headers=who.headers), 404, "not_found")
    assert_error(app_client.get(url(cid, "/messages"), headers=who.headers), 404, "not_found")
    assert_error(say(app_client, who, cid, "anyone?"), 404, "not_found")
    assert_error(app_client.delete(url(cid), headers=who.headers), 404, "not_found")
    items = stored(runtime, cid)
    assert len(items) == 4  # still there: TTL deletion is DynamoDB's, and lazy
    expires = {int(item["expires_at"]["N"]) for item in items}
    assert len(expires) == 1  # every item expires with the conversation


# --- the turn lock -----------------------------------------------------------------------


def test_a_busy_conversation_answers_409_with_retry_after(
    app_client: TestClient, runtime: Runtime, clock: FakeClock
) -> None:
    who = caller(runtime)
    cid = create(app_client, who)["id"]
    service = runtime.conversations
    runtime.__dict__["conversations"] = ConversationService(
        service.store, service.inference, service.clock, busy_wait_seconds=0.05
    )
    now = clock.now()
    held = service.store.lock(cid, who.record.org_id, "another-turn", now, now + 900)
    assert held is not None and held.id == cid
    response = say(app_client, who, cid, "hello?")
    error = assert_error(response, 409, "conversation_busy")
    assert error["retryable"] is True
    assert response.headers["retry-after"] == "1"
    assert all_messages(app_client, who, cid) == []
    # A holder that died mid-turn: its lock lapses and the next message goes through.
    clock.advance(901)
    assert turn(app_client, who, cid, "hello again", max_tokens=3)["turn"] == 1
