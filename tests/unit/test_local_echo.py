from __future__ import annotations

import json
import time
from importlib import resources

from gantry.adapters.local import tokenizer
from gantry.adapters.local.provider import LocalProvider
from gantry.domain.registry import Registry
from gantry.ports import Message, SamplingParams

REGISTRY = Registry.from_dict(
    json.loads(resources.files("gantry").joinpath("models.json").read_text())
)
ECHO = REGISTRY.get("gantry-echo")
MESSAGES = [
    Message("system", "Repeat after me."),
    Message("user", "first question"),
    Message("assistant", "first answer"),
    Message("user", "Hello there, how are you today?"),
]


def test_chat_returns_the_last_user_message() -> None:
    result = LocalProvider().chat(ECHO, MESSAGES, SamplingParams(max_tokens=100))
    (choice,) = result.choices
    assert choice.text == "Hello there, how are you today?"
    assert choice.finish_reason == "stop"
    assert choice.completion_tokens == tokenizer.count(choice.text) == 8
    assert result.prompt_tokens == tokenizer.count_chat_tokens(MESSAGES)


def test_complete_returns_the_prompt() -> None:
    result = LocalProvider().complete(ECHO, "Say this back.", SamplingParams(max_tokens=100))
    assert result.choices[0].text == "Say this back."
    assert result.prompt_tokens == tokenizer.count("Say this back.")


def test_max_tokens_truncates_with_length() -> None:
    (choice,) = LocalProvider().chat(ECHO, MESSAGES, SamplingParams(max_tokens=3)).choices
    assert choice.text == "Hello there,"
    assert choice.finish_reason == "length"
    assert choice.completion_tokens == 3


def test_stop_sequences_are_honoured() -> None:
    params = SamplingParams(max_tokens=100, stop=("how", "never"))
    (choice,) = LocalProvider().chat(ECHO, MESSAGES, params).choices
    assert choice.text == "Hello there, "
    assert choice.finish_reason == "stop"
    assert choice.completion_tokens == tokenizer.count("Hello there, ")


def test_stop_beyond_max_tokens_is_not_reached() -> None:
    params = SamplingParams(max_tokens=2, stop=("today",))
    (choice,) = LocalProvider().chat(ECHO, MESSAGES, params).choices
    assert (choice.text, choice.finish_reason) == ("Hello there", "length")


def test_n_choices_and_logprobs() -> None:
    params = SamplingParams(max_tokens=10, n=3, logprobs=True, top_logprobs=1)
    result = LocalProvider().complete(ECHO, "a b c", params)
    assert len(result.choices) == 3
    assert result.completion_tokens == 9
    logprobs = result.choices[0].logprobs
    assert logprobs is not None
    assert [e.token for e in logprobs] == ["a", " b", " c"]
    assert all(e.logprob == 0.0 for e in logprobs)


def test_echo_is_instant() -> None:
    provider = LocalProvider()
    start = time.perf_counter()
    for _ in range(200):
        provider.chat(ECHO, MESSAGES, SamplingParams(max_tokens=50))
    assert time.perf_counter() - start < 0.5
