"""Word-level text helpers shared by retrieval, embeddings and classification."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")

_STOPWORDS = """
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each either few for from
further had has have having he her here hers herself him himself his how i if in into is it its
itself just let me more most much must my myself no nor not now of off on once only or other our
ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up us very was we were
what when where which while who whom why will with would you your yours yourself yourselves
"""
STOPWORDS = frozenset(_STOPWORDS.split())

_SUFFIXES = (
    "ational", "ations", "ation", "nesses", "ness", "ments", "ment", "ingly", "ings", "ing",
    "edly", "ed", "ers", "er", "ly", "es", "s",
)  # fmt: skip


def words(text: str) -> list[str]:
    """Lower-cased words and numbers, apostrophes kept inside words."""
    return _WORD.findall(text.lower())


def stem(word: str) -> str:
    """A light suffix-stripping stemmer: "baking", "baked" and "bakes" all become "bak"."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= (4 if "er" in suffix else 3):
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                break
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsaeiou":
        word = word[:-1]
    return word


def content_words(text: str) -> list[str]:
    """Stems of the words of `text` that carry meaning (no stopwords, no single letters)."""
    return [stem(w) for w in words(text) if len(w) > 1 and w not in STOPWORDS]
