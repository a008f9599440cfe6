"""The bundled training corpus: plain English prose written for this project.

The corpus is the files ``data/corpus-*.txt`` read in name order. A document is a run of
non-blank lines; blank lines separate documents. Question-and-answer documents use the chat
rendering of the tokenizer (``user: ...`` then ``assistant: ...``), so the language model
learns to answer after ``assistant:``.
"""

from __future__ import annotations

import re
import threading
from importlib import resources

_BLANK_LINES = re.compile(r"\n[ \t]*\n+")
_lock = threading.Lock()
_documents: tuple[str, ...] | None = None


def documents() -> tuple[str, ...]:
    """Every document of the corpus, read once per process."""
    global _documents
    if _documents is None:
        with _lock:
            if _documents is None:
                _documents = _read()
    return _documents


def split_documents(text: str) -> list[str]:
    return [doc.strip() for doc in _BLANK_LINES.split(text) if doc.strip()]


def _read() -> tuple[str, ...]:
    folder = resources.files(__name__.rpartition(".")[0]).joinpath("data")
    names = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name.startswith("corpus-") and entry.name.endswith(".txt")
    )
    docs: list[str] = []
    for name in names:
        docs.extend(split_documents(folder.joinpath(name).read_text(encoding="utf-8")))
    return tuple(docs)
