"""Streaming yields exactly the text, finish reason and usage of the buffered call."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from gantry.adapters.local.provider import LocalProvider
from gantry.domain.registry import Registry
from gantry.ports import ChoiceDone, Message, SamplingParams, StreamEvent, TextDelta

REGISTRY = Registry.from_dict(
    json.loads(resources.files("gantry").joinpath("models.json").read_text())
)
SMALL = REGISTRY.get("gantry-small")
ECHO = REGISTRY.get("gantry-echo")
MESSAGES = [Message("user", "Tell me about the weather in the mountains and the rain.")]


def collect(events: list[StreamEvent], n: int) -> list[tuple[str, str, int, int]]:
    texts = [""] * n
    generated = [0] * n
    done: dict[int, ChoiceDone] = {}
    for event in events:
        if isinstance(event, TextDelta):
            assert event.index not in done
            texts[event.index] += event.text
            generated[event.index] += event.tokens
        else:
            done[event.index] = event
    return [
        (texts[i], done[i].finish_reason, done[i].completion_tokens, generated[i]) for i in range(n)
    ]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("stop", [(), (" the",), ("e", "in the"), (".\n",)])
def test_chat_stream_matches_buffered(seed: int, stop: tuple[str, ...]) -> None:
    provider = LocalProvider()
    params = SamplingParams(max_tokens=40, temperature=0.9, seed=seed, stop=stop, n=2)
    buffered = provider.chat(SMALL, MESSAGES, params)
    streamed = collect(list(provider.chat_stream(SMALL, MESSAGES, params)), 2)
    for choice, (text, finish, tokens, generated) in zip(buffered.choices, streamed, strict=True):
        assert text == choice.text
        assert finish == choice.finish_reason
        assert tokens == choice.completion_tokens
        assert generated >= tokens
        for s in stop:
            assert s not in text


def test_completion_stream_matches_buffered() -> None:
    provider = LocalProvider()
    params = SamplingParams(max_tokens=25, temperature=0, stop=("\n",))
    buffered = provider.complete(SMALL, "The cloud", params)
    ((text, finish, tokens, _),) = collect(
        list(provider.complete_stream(SMALL, "The cloud", params)), 1
    )
    assert (text, finish, tokens) == (
        buffered.choices[0].text,
        buffered.choices[0].finish_reason,
        buffered.choices[0].completion_tokens,
    )


def test_stream_is_incremental_and_stops_when_closed() -> None:
    provider = LocalProvider()
    params = SamplingParams(max_tokens=200, temperature=1.0, seed=1)
    stream = provider.chat_stream(SMALL, MESSAGES, params)
    first = next(stream)
    assert isinstance(first, TextDelta) and first.text
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)


def test_echo_streams_one_token_per_delta() -> None:
    provider = LocalProvider()
    params = SamplingParams(max_tokens=3)
    events = list(provider.chat_stream(ECHO, MESSAGES, params))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Tell", " me", " about"]
    assert events[-1] == ChoiceDone(0, "length", 3)
