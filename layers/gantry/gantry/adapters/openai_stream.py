"""OpenAI stream chunks as Gantry stream events, with exact usage at the end.

Text becomes `TextDelta`s as it arrives, each counted with the model's tokenizer (at least
one token per non-empty delta: servers send about one token per chunk), which is what a
stream cut short is billed for. Each choice's `ChoiceDone` is held until the stream ends,
when the server's final usage chunk (`stream_options.include_usage`) gives the exact
completion tokens; several choices share that total in proportion to their counted tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from gantry.adapters.openai_wire import finish_reason, split_tokens
from gantry.ports import ChoiceDone, StreamEvent, TextDelta


class StreamTally:
    def __init__(self, n: int, chat: bool, count: Callable[[str], int]) -> None:
        self._n = n
        self._chat = chat
        self._count = count
        self.counted: dict[int, int] = {}
        self.finish: dict[int, str] = {}
        self.completion_tokens: int | None = None

    @property
    def all_finished(self) -> bool:
        return len(self.finish) >= self._n

    def feed(self, chunk: Mapping[str, Any]) -> Iterator[StreamEvent]:
        usage = chunk.get("usage")
        if isinstance(usage, Mapping) and isinstance(usage.get("completion_tokens"), int):
            self.completion_tokens = usage["completion_tokens"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, Mapping):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            text = self._text(choice)
            if text:
                tokens = max(1, self._count(text))
                self.counted[index] = self.counted.get(index, 0) + tokens
                yield TextDelta(index, text, tokens)
            reason = choice.get("finish_reason")
            if reason:
                self.finish[index] = finish_reason(reason)

    def _text(self, choice: Mapping[str, Any]) -> str:
        if self._chat:
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, Mapping) else None
        else:
            text = choice.get("text")
        return text if isinstance(text, str) else ""

    def done(self) -> Iterator[ChoiceDone]:
        indexes = sorted(set(range(self._n)) | set(self.finish) | set(self.counted))
        counted = [self.counted.get(i, 0) for i in indexes]
        if self.completion_tokens is None:
            shares = counted
        elif len(indexes) == 1:
            shares = [self.completion_tokens]
        else:
            shares = split_tokens(self.completion_tokens, counted)
        for index, tokens in zip(indexes, shares, strict=True):
            yield ChoiceDone(index, self.finish.get(index, "stop"), tokens)
