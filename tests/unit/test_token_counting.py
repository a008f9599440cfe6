"""Token counts before a remote call: exact offline where the tokenizer ships, otherwise a
conservative estimate."""

from __future__ import annotations

import pytest

from gantry.adapters import token_counting
from gantry.ports import Message


@pytest.mark.parametrize(
    ("tokenizer", "text", "expected"),
    [
        ("cl100k_base", "hello world", 2),
        ("o200k_base", "hello world", 2),
        ("cl100k_base", "Hello, how are you today?", 7),
        ("llama3", "Hello, how are you?", 6),
        ("qwen3", "hello world", 2),
    ],
)
def test_known_tokenizers_count_exactly(tokenizer: str, text: str, expected: int) -> None:
    assert token_counting.is_exact(tokenizer)
    assert token_counting.count_text(tokenizer, text) == expected


def test_special_token_text_counts_as_ordinary_text() -> None:
    assert token_counting.count_text("cl100k_base", "<|endoftext|>") > 1


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog, again and again.",
        "日本語のテキストを数えます",
        "x = [1, 2, 3]; print(sum(x))",
        "Straße über Äpfel",
    ],
)
def test_the_estimate_never_undercounts_these_tokenizers(text: str) -> None:
    assert not token_counting.is_exact("anthropic-unknown")
    estimate = token_counting.count_text("anthropic-unknown", text)
    for exact in ("cl100k_base", "o200k_base", "llama3", "qwen3"):
        assert estimate >= token_counting.count_text(exact, text)


def test_chat_adds_the_template_overhead() -> None:
    messages = [Message("system", "Be brief."), Message("user", "hello world", name="ann")]
    content = sum(
        token_counting.count_text("cl100k_base", t)
        for t in ("system", "Be brief.", "user", "hello world", "ann")
    )
    expected = content + 2 * token_counting.MESSAGE_OVERHEAD + 1 + token_counting.REPLY_PRIMING
    assert token_counting.count_chat("cl100k_base", messages) == expected


def test_empty_text_is_zero_tokens() -> None:
    assert token_counting.count_text("cl100k_base", "") == 0
    assert token_counting.count_text("unknown", "") == 0
