"""Context planning for conversations: truncate, summarize and fail within the token budget."""

from __future__ import annotations

import pytest

from gantry.domain.conversations import (
    SUMMARY_NOTE,
    GenerationDefaults,
    History,
    StoredMessage,
    Summary,
    TokenTotals,
    Turn,
    Window,
    message_id,
    message_seq,
    pair_turns,
    plan_context,
    summary_request,
)
from gantry.domain.errors import ContextLengthExceeded, InvalidRequest
from gantry.domain.metadata import validate_metadata
from gantry.ports import Message

CID = "conv_" + "ab" * 12
SYSTEM = Message("system", "be brief")


def message(seq: int, tokens: int) -> StoredMessage:
    role = "user" if seq % 2 else "assistant"
    return StoredMessage(CID, seq, role, f"{role} {seq}", tokens, 0.0)


def turns(count: int, tokens: int = 10) -> tuple[Turn, ...]:
    return tuple(
        Turn(message(2 * n - 1, tokens), message(2 * n, tokens)) for n in range(1, 1 + count)
    )


def window(context_window: int = 200, max_tokens: int = 50) -> Window:
    return Window("m", context_window, max_tokens, overhead=2)


def history(count: int, summary: Summary | None = None, complete: bool = True) -> History:
    first = summary.through + 1 if summary else 1
    return History("be brief", summary, turns(count)[first - 1 :], complete)


def new_user(count: int, tokens: int = 10) -> StoredMessage:
    return message(2 * count + 1, tokens)


# budget 150 = 2 overhead + 5 system + 10 user + room 133: six 20-token turns fit.


def test_truncate_keeps_the_newest_turns_that_fit() -> None:
    plan = plan_context("truncate", window(), SYSTEM, 5, history(10), new_user(10), 40)
    assert [t.number for t in plan.kept] == [5, 6, 7, 8, 9, 10]
    assert plan.first_turn == 5 and plan.truncated_turns == 4
    assert plan.messages[0] == SYSTEM
    assert plan.messages[-1] == Message("user", "user 21")
    assert plan.messages[1] == Message("user", "user 9")  # turn 5's message, the oldest kept
    assert plan.tokens == 2 + 5 + 10 + 6 * 20 <= window().budget
    assert not plan.fold


def test_everything_fits_nothing_is_dropped() -> None:
    plan = plan_context("truncate", window(), SYSTEM, 5, history(3), new_user(3), 40)
    assert plan.first_turn == 1 and plan.truncated_turns == 0
    assert len(plan.messages) == 1 + 6 + 1


def test_a_message_larger_than_the_budget_is_refused_by_every_strategy() -> None:
    for strategy in ("truncate", "summarize", "fail"):
        with pytest.raises(ContextLengthExceeded) as raised:
            plan_context(strategy, window(), SYSTEM, 5, history(0), new_user(0, 200), 40)
        assert raised.value.param == "content"
        assert raised.value.details == {
            "prompt_tokens": 2 + 5 + 200,
            "max_tokens": 50,
            "context_window": 200,
            "strategy": strategy,
        }


def test_fail_refuses_a_history_that_does_not_fit() -> None:
    plan = plan_context("fail", window(), SYSTEM, 5, history(6), new_user(6), 40)
    assert len(plan.kept) == 6
    with pytest.raises(ContextLengthExceeded) as raised:
        plan_context("fail", window(), SYSTEM, 5, history(7), new_user(7), 40)
    assert raised.value.param is None
    assert raised.value.details is not None
    assert raised.value.details["prompt_tokens"] == 2 + 5 + 10 + 7 * 20


def test_fail_refuses_an_incomplete_read() -> None:
    with pytest.raises(ContextLengthExceeded):
        plan_context("fail", window(), SYSTEM, 5, history(2, complete=False), new_user(2), 40)


def test_summarize_folds_the_oldest_turns_and_keeps_half_the_room() -> None:
    plan = plan_context("summarize", window(), SYSTEM, 5, history(10), new_user(10), 40)
    # room with a full summary: 150 - 17 - 40 = 93; the kept turns take at most 46.
    assert [t.number for t in plan.fold] == list(range(1, 9))
    assert [t.number for t in plan.kept] == [9, 10]


def test_summarize_uses_the_summary_until_it_overflows_again() -> None:
    summary = Summary("they talked", 12, through=8)
    plan = plan_context("summarize", window(), SYSTEM, 5, history(11, summary), new_user(11), 40)
    assert not plan.fold
    assert plan.messages[1] == Message("system", SUMMARY_NOTE + "they talked")
    assert [t.number for t in plan.kept] == [9, 10, 11]
    assert plan.summarized_turns == 8 and plan.truncated_turns == 0
    overflowing = plan_context(
        "summarize", window(), SYSTEM, 5, history(15, summary), new_user(15), 40
    )
    assert [t.number for t in overflowing.fold] == [9, 10, 11, 12, 13]


def test_summarize_without_folding_cuts_like_truncate() -> None:
    summary = Summary("long", 100, through=2)
    plan = plan_context(
        "summarize", window(), SYSTEM, 5, history(8, summary), new_user(8), 40, fold=False
    )
    assert plan.summary == summary
    assert [t.number for t in plan.kept] == [8]
    assert plan.truncated_turns == 5


def test_summary_request_holds_the_previous_summary_and_the_turns() -> None:
    prompt = summary_request(Summary("earlier", 3, 1), turns(2)[1:])
    assert prompt[0].role == "system"
    assert "Summary so far: earlier" in prompt[1].content
    assert "user: user 3" in prompt[1].content and "assistant: assistant 4" in prompt[1].content


def test_pairs_whole_turns_only() -> None:
    found = pair_turns([message(4, 1), message(2, 1), message(3, 1), message(5, 1)])
    assert [t.number for t in found] == [2]


def test_message_ids_round_trip_and_belong_to_their_conversation() -> None:
    assert message_seq(CID, message_id(CID, 42), "after") == 42
    with pytest.raises(InvalidRequest) as raised:
        message_seq(CID, message_id("conv_" + "cd" * 12, 1), "after")
    assert raised.value.param == "after"


def test_metadata_limits() -> None:
    assert validate_metadata({"a": "x" * 512}) == {"a": "x" * 512}
    with pytest.raises(InvalidRequest) as raised:
        validate_metadata({f"k{i}": "v" for i in range(17)})
    assert raised.value.param == "metadata"
    with pytest.raises(InvalidRequest) as raised:
        validate_metadata({"a": "x" * 513})
    assert raised.value.param == "metadata.a"


def test_defaults_layering_and_totals() -> None:
    base = GenerationDefaults(max_tokens=10, temperature=0.5, stop=("x",))
    merged = GenerationDefaults(temperature=0.0, seed=1).over(base)
    assert merged == GenerationDefaults(max_tokens=10, temperature=0.0, stop=("x",), seed=1)
    assert GenerationDefaults.from_dict(merged.as_dict()) == merged
    total = TokenTotals.of(10, 5, 0.000001) + TokenTotals(1, 1, 1)
    assert (total.total_tokens, total.cost_nano) == (17, 1001)
