"""The `gantry-words-v1` tokenizer, shared by every local model.

A text is split, left to right, into the first matching piece of:

1. a newline ``"\\n"``, always a token of its own;
2. a word: an optional single leading space, then letters, optionally joined by apostrophes
   (``" don't"``, ``"Hello"``);
3. a number: an optional single leading space, then one to three digits (``" 2026"`` is
   ``" 202"`` + ``"6"``);
4. a symbol: an optional single leading space, then one character that is neither a letter,
   a digit nor whitespace (``","``, ``" ("``, ``"_"``);
5. a run of other whitespace (spaces, tabs, carriage returns) that is not followed by a piece
   that could take one of its spaces as a leading space.

Splitting is lossless: the pieces concatenate back to the input. `count(text)` is the number
of pieces, and is what every local model bills.

Chat prompts are rendered as text, one line per message, ``"role: content"`` (or
``"role(name): content"``), followed by ``"assistant:"``; the prompt tokens of a chat request
are exactly the tokens of that rendering, with no hidden per-message overhead.

`Vocabulary` maps pieces to the integer ids the language model uses (and that `logit_bias`
refers to). Ids 0 and 1 are the special end-of-text and unknown-piece tokens.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from gantry.ports import Message

NAME = "gantry-words-v1"

_PIECE = re.compile(
    r"""
    \n
    | [ ]?[^\W\d_]+(?:'[^\W\d_]+)*
    | [ ]?\d{1,3}
    | [ ]?(?:[^\w\s]|_)
    | [^\S\n]+?(?=[ ]?[^\s]|\n|$)
    """,
    re.VERBOSE,
)

END_OF_TEXT = "<|endoftext|>"
UNKNOWN = "<|unk|>"
EOT_ID = 0
UNK_ID = 1


def split(text: str) -> list[str]:
    """The pieces of `text`, in order; ``"".join(split(text)) == text``."""
    return _PIECE.findall(text)


def count(text: str) -> int:
    return sum(1 for _ in _PIECE.finditer(text))


def render_chat(messages: Sequence[Message]) -> str:
    """The text a chat prompt is billed and conditioned on."""
    lines = []
    for message in messages:
        speaker = f"{message.role}({message.name})" if message.name else message.role
        lines.append(f"{speaker}: {message.content}\n")
    return "".join(lines) + "assistant:"


def count_chat_tokens(messages: Sequence[Message]) -> int:
    return count(render_chat(messages))


class Vocabulary:
    """A fixed, ordered list of pieces. Ids never change once assigned; `extended` appends."""

    def __init__(self, pieces: Sequence[str]) -> None:
        if list(pieces[:2]) != [END_OF_TEXT, UNKNOWN]:
            raise ValueError("a vocabulary starts with the end-of-text and unknown tokens")
        self._pieces = tuple(pieces)
        self._ids = {piece: index for index, piece in enumerate(self._pieces)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocabulary:
        """Most frequent pieces first, ties in code-point order, so ids are reproducible."""
        counts = Counter(piece for text in texts for piece in split(text))
        ranked = sorted(counts, key=lambda piece: (-counts[piece], piece))
        return cls([END_OF_TEXT, UNKNOWN, *ranked])

    def extended(self, texts: Iterable[str]) -> Vocabulary:
        """This vocabulary plus any new pieces of `texts`, appended in order of appearance."""
        new: dict[str, None] = {}
        for text in texts:
            for piece in split(text):
                if piece not in self._ids:
                    new[piece] = None
        return self if not new else Vocabulary([*self._pieces, *new])

    def __len__(self) -> int:
        return len(self._pieces)

    @property
    def pieces(self) -> tuple[str, ...]:
        return self._pieces

    def id_of(self, piece: str) -> int:
        return self._ids.get(piece, UNK_ID)

    def piece(self, token_id: int) -> str:
        return self._pieces[token_id]

    def encode(self, text: str) -> list[int]:
        ids = self._ids
        return [ids.get(piece, UNK_ID) for piece in split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._pieces[i] for i in ids if i > UNK_ID)
