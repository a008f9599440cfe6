from __future__ import annotations

import pytest

from gantry.adapters.local import tokenizer
from gantry.adapters.local.tokenizer import EOT_ID, UNK_ID, Vocabulary
from gantry.ports import Message

TEXTS = [
    "",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\r\nwindows line endings\n\n\nand blank lines",
    "Numbers: 1, 22, 333, 4444, 3.14159 and 1,000,000.",
    "Unicode: café, naïve, Straße, 東京, emoji 🙂 and — dashes",
    "snake_case and CamelCase and don't and rock'n'roll",
    "a   b    c",
    "<|endoftext|> is just text here",
]


@pytest.mark.parametrize("text", TEXTS)
def test_split_is_lossless_and_count_matches(text: str) -> None:
    pieces = tokenizer.split(text)
    assert "".join(pieces) == text
    assert all(pieces)
    assert tokenizer.count(text) == len(pieces)


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("Hello, world!", ["Hello", ",", " world", "!"]),
        ("I don't know", ["I", " don't", " know"]),
        ("In 2026 we", ["In", " 202", "6", " we"]),
        ("one\ntwo", ["one", "\n", "two"]),
        ("a  b", ["a", " ", " b"]),
        ("x (y)", ["x", " (", "y", ")"]),
        ("user: hi", ["user", ":", " hi"]),
    ],
)
def test_split_rules(text: str, pieces: list[str]) -> None:
    assert tokenizer.split(text) == pieces


def test_chat_rendering_is_one_line_per_message_then_assistant() -> None:
    messages = [
        Message("system", "Be brief."),
        Message("user", "Hi there", name="ana"),
    ]
    rendered = tokenizer.render_chat(messages)
    assert rendered == "system: Be brief.\nuser(ana): Hi there\nassistant:"
    assert tokenizer.count_chat_tokens(messages) == tokenizer.count(rendered)
    # system : Be brief . \n user ( ana ): ... -> counted exactly, no hidden overhead
    assert tokenizer.count_chat_tokens([Message("user", "hi")]) == len(
        ["user", ":", " hi", "\n", "assistant", ":"]
    )


def test_vocabulary_ids_and_round_trip() -> None:
    vocabulary = Vocabulary.from_texts(["a the cat saw the dog", "the cat and the dog sat"])
    assert vocabulary.piece(EOT_ID) == tokenizer.END_OF_TEXT
    assert vocabulary.piece(UNK_ID) == tokenizer.UNKNOWN
    assert vocabulary.id_of(" the") == 2  # most frequent piece first
    assert vocabulary.pieces[3:5] == (" cat", " dog")  # ties in code-point order
    ids = vocabulary.encode("the cat sat")
    assert ids == [vocabulary.id_of("the"), 3, vocabulary.id_of(" sat")]
    assert vocabulary.decode(ids) == "the cat sat"
    assert vocabulary.encode("the zebra") == [vocabulary.id_of("the"), UNK_ID]


def test_extended_vocabulary_keeps_existing_ids() -> None:
    base = Vocabulary.from_texts(["alpha beta"])
    extended = base.extended(["alpha beta gamma"])
    assert extended.pieces[: len(base)] == base.pieces
    assert extended.id_of(" gamma") == len(base)
    assert base.extended(["alpha beta"]) is base
