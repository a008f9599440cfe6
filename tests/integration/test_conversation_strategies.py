"""Context strategies on a model with a 300-token window: what each turn sends the model,
what is dropped or summarised, and what is billed."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from gantry.adapters.aws import client
from gantry.domain.conversations import SUMMARY_INSTRUCTIONS, SUMMARY_NOTE
from gantry.ports import Message
from gantry.runtime import Runtime
from tests.conftest import assert_error
from tests.conversation_support import (
    CONVERSATIONS,
    all_messages,
    caller,
    create,
    say,
    small_window_model,
    turn,
)
from tests.integration.test_limits_settlement import scan

WINDOW = 300
MAX_TOKENS = 40
BUDGET = WINDOW - MAX_TOKENS
SYSTEM = "You are a terse assistant."


WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "maple",
    "orbit",
    "cedar",
    "lemon",
    "harbor",
    "violet",
    "canyon",
    "meadow",
]


def content(n: int) -> str:
    """About 30 tokens, different for every turn."""
    return f"Turn {n}: " + " ".join(WORDS[(n * 5 + i * 7) % len(WORDS)] for i in range(24))


def as_messages(stored: list[dict[str, Any]]) -> list[Message]:
    return [Message(m["role"], m["content"]) for m in stored]


def test_truncate_drops_the_oldest_turns_and_keeps_the_system_prompt(
    app_client: TestClient, runtime: Runtime
) -> None:
    recorder = small_window_model(runtime, "conv-echo-small", base="gantry-echo")
    who = caller(runtime)
    cid = create(
        app_client,
        who,
        model="conv-echo-small",
        system=SYSTEM,
        strategy="truncate",
        defaults={"max_tokens": MAX_TOKENS},
    )["id"]
    truncated = []
    for n in range(1, 11):
        body = turn(app_client, who, cid, content(n))
        context = body["context"]
        assert context["prompt_tokens"] <= BUDGET
        assert context["first_turn"] == context["truncated_turns"] + 1
        assert context["summarized_turns"] == context["summary_tokens"] == 0
        history = all_messages(app_client, who, cid)
        kept = history[2 * (context["first_turn"] - 1) : -2]
        sent = recorder.calls[-1]
        assert sent == [Message("system", SYSTEM), *as_messages(kept), Message("user", content(n))]
        if context["truncated_turns"]:
            # As many turns as fit: the next older one would not have.
            dropped = history[2 * (context["first_turn"] - 2) : 2 * (context["first_turn"] - 1)]
            assert context["prompt_tokens"] + sum(m["tokens"] for m in dropped) > BUDGET
        truncated.append(context["truncated_turns"])
    assert truncated[0] == 0 and truncated[-1] > 0
    assert truncated == sorted(truncated)  # the oldest turns go first, and stay gone


def test_truncate_refuses_a_message_larger_than_the_window(
    app_client: TestClient, runtime: Runtime
) -> None:
    small_window_model(runtime, "conv-echo-small", base="gantry-echo")
    who = caller(runtime)
    cid = create(app_client, who, model="conv-echo-small", defaults={"max_tokens": MAX_TOKENS})[
        "id"
    ]
    error = assert_error(
        say(app_client, who, cid, "word " * WINDOW), 400, "context_length_exceeded", "content"
    )
    assert error["details"]["context_window"] == WINDOW
    assert error["details"]["max_tokens"] == MAX_TOKENS
    assert error["details"]["prompt_tokens"] > BUDGET


def test_fail_answers_400_with_the_sizes_and_stores_nothing(
    app_client: TestClient, runtime: Runtime
) -> None:
    recorder = small_window_model(runtime, "conv-echo-small", base="gantry-echo")
    who = caller(runtime)
    cid = create(
        app_client,
        who,
        model="conv-echo-small",
        system=SYSTEM,
        strategy="fail",
        defaults={"max_tokens": MAX_TOKENS},
    )["id"]
    n = 0
    while True:
        n += 1
        response = say(app_client, who, cid, content(n))
        if response.status_code != 200:
            break
        context = response.json()["context"]
        assert context["first_turn"] == 1 and context["truncated_turns"] == 0
        assert len(recorder.calls[-1]) == 1 + 2 * (n - 1) + 1  # the whole conversation
    assert n > 2
    error = assert_error(response, 400, "context_length_exceeded", None)
    details = error["details"]
    assert details["context_window"] == WINDOW and details["max_tokens"] == MAX_TOKENS
    assert details["prompt_tokens"] + MAX_TOKENS > WINDOW
    assert details["strategy"] == "fail"
    assert len(all_messages(app_client, who, cid)) == 2 * (n - 1)
    read = app_client.get(f"{CONVERSATIONS}/{cid}", headers=who.headers).json()
    assert read["turn_count"] == n - 1
    meta = client("dynamodb", runtime.settings).get_item(
        TableName=runtime.settings.conversations_table,
        Key={"pk": {"S": f"CONV#{cid}"}, "sk": {"S": "META"}},
        ConsistentRead=True,
    )["Item"]
    assert "lk" not in meta  # the refused turn released the conversation
    big = say(app_client, who, cid, "word " * WINDOW)
    assert_error(big, 400, "context_length_exceeded", "content")


def summary_text(runtime: Runtime, cid: str) -> str:
    item = client("dynamodb", runtime.settings).get_item(
        TableName=runtime.settings.conversations_table,
        Key={"pk": {"S": f"CONV#{cid}"}, "sk": {"S": "SUMMARY"}},
        ConsistentRead=True,
    )["Item"]
    return str(item["text"]["S"])


def test_summarize_folds_the_oldest_turns_into_a_summary_the_model_then_reads(
    app_client: TestClient, runtime: Runtime
) -> None:
    recorder = small_window_model(runtime, "conv-small", base="gantry-small")
    who = caller(runtime)
    cid = create(
        app_client,
        who,
        model="conv-small",
        system=SYSTEM,
        strategy="summarize",
        defaults={"max_tokens": MAX_TOKENS, "seed": 1},
    )["id"]
    n, summaries, turns, summary_count = 0, [], {}, 0
    while len(summaries) < 2:
        n += 1
        calls = len(recorder.calls)
        response = say(app_client, who, cid, content(n))
        assert response.status_code == 200, response.text
        body = turns[n] = response.json()
        context = body["context"]
        assert context["truncated_turns"] == 0  # under summarize nothing is simply lost
        assert context["first_turn"] == context["summarized_turns"] + 1
        reply_call = recorder.calls[-1]
        assert reply_call[0] == Message("system", SYSTEM)
        assert reply_call[-1] == Message("user", content(n))
        if not context["summary_updated"]:
            assert len(recorder.calls) == calls + 1  # no summary call this turn
            if summaries:  # the stored summary is still the one in use
                assert reply_call[1] == Message("system", SUMMARY_NOTE + summaries[-1][1])
            continue
        # Summary calls (one, unless the turns to fold overflow the window), then the reply.
        summary_calls = recorder.calls[calls:-1]
        assert summary_calls
        assert all(c[0] == Message("system", SUMMARY_INSTRUCTIONS) for c in summary_calls)
        prompt = "\n".join(c[1].content for c in summary_calls)
        previous = summaries[-1][0] if summaries else 0
        folded = range(previous + 1, context["summarized_turns"] + 1)
        assert all(content(k) in prompt for k in folded)  # the oldest turns, summarised
        assert all(content(k) not in prompt for k in range(context["first_turn"], n + 1))
        if summaries:
            assert summary_calls[0][1].content.startswith(f"Summary so far: {summaries[-1][1]}")
        text = summary_text(runtime, cid)
        assert reply_call[1] == Message("system", SUMMARY_NOTE + text)  # the summary is used
        assert context["summary_tokens"] > 0
        summaries.append((context["summarized_turns"], text))

        # The summary is billed with the turn: its own ledger item next to the reply's.
        request_id = response.headers["x-request-id"]
        items = {item["request_id"]["S"]: item for item in scan(runtime, "REQ#", who.record.key_id)}
        pair = [items[request_id]]
        pair += [items[f"{request_id}.summary{k}"] for k in range(1, len(summary_calls) + 1)]
        assert [i["endpoint"]["S"] for i in pair] == ["conversations.messages"] + [
            "conversations.summary"
        ] * len(summary_calls)
        summary_count += len(summary_calls)
        assert sum(int(i["prompt_tokens"]["N"]) for i in pair) == body["usage"]["prompt_tokens"]
        assert (
            sum(int(i["completion_tokens"]["N"]) for i in pair)
            == body["usage"]["completion_tokens"]
        )
    assert summaries[0][0] < summaries[1][0]

    ledger = scan(runtime, "REQ#", who.record.key_id)
    assert len(ledger) == n + summary_count
    billed = sum(int(i["prompt_tokens"]["N"]) + int(i["completion_tokens"]["N"]) for i in ledger)
    assert billed == sum(t["usage"]["total_tokens"] for t in turns.values())
    read = app_client.get(f"{CONVERSATIONS}/{cid}", headers=who.headers).json()
    assert read["usage"]["total_tokens"] == billed
    summary = {"turns": summaries[-1][0], "tokens": turns[n]["context"]["summary_tokens"]}
    assert read["summary"] == summary
