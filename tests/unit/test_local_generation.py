from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

import pytest

from gantry.adapters.local import language_model, tokenizer
from gantry.adapters.local.provider import LocalProvider
from gantry.adapters.local.tokenizer import EOT_ID
from gantry.domain.registry import ModelSpec, Registry
from gantry.ports import Generation, Message, SamplingParams

REGISTRY = Registry.from_dict(
    json.loads(resources.files("gantry").joinpath("models.json").read_text())
)
SMALL = REGISTRY.get("gantry-small")
PROMPT = "The weather today is"
CHAT = [Message("system", "You are helpful."), Message("user", "How do I bake bread?")]
NO_END = {EOT_ID: -100.0}


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    return LocalProvider()


def params(max_tokens: int = 30, **kwargs: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, **kwargs)


def complete(provider: LocalProvider, prompt: str = PROMPT, **kwargs: Any) -> Generation:
    """One choice for `prompt`; keyword arguments are `SamplingParams` fields."""
    result = provider.complete(SMALL, prompt, params(**kwargs))
    assert len(result.choices) == 1
    return result.choices[0]


def token_id(piece: str) -> int:
    token = language_model.base_model().vocabulary.id_of(piece)
    assert token > 1, piece
    return token


def repetition(texts: Sequence[str]) -> float:
    """Mean share of tokens that repeat an earlier token of the same text."""
    shares = []
    for text in texts:
        pieces = tokenizer.split(text)
        shares.append(1 - len(set(pieces)) / len(pieces))
    return sum(shares) / len(shares)


# --- determinism --------------------------------------------------------------------------


def test_same_seed_same_output(provider: LocalProvider) -> None:
    first = complete(provider, seed=42, temperature=1.0)
    second = complete(provider, seed=42, temperature=1.0)
    assert first == second
    chat_a = provider.chat(SMALL, CHAT, params(seed=7))
    chat_b = provider.chat(SMALL, CHAT, params(seed=7))
    assert chat_a == chat_b


def test_different_seeds_differ(provider: LocalProvider) -> None:
    texts = {complete(provider, seed=seed, logit_bias=NO_END).text for seed in range(8)}
    assert len(texts) >= 6


def test_no_seed_draws_fresh_randomness(provider: LocalProvider) -> None:
    texts = {complete(provider, logit_bias=NO_END).text for _ in range(6)}
    assert len(texts) >= 4


def test_temperature_zero_is_greedy_and_ignores_the_seed(provider: LocalProvider) -> None:
    outputs = {complete(provider, temperature=0.0, seed=seed).text for seed in (None, 1, 2, 3)}
    assert len(outputs) == 1
    choice = complete(provider, temperature=0.0, logprobs=True, top_logprobs=3)
    assert choice.logprobs is not None
    for entry in choice.logprobs:
        assert entry.token == entry.top_logprobs[0].token
        assert entry.logprob == entry.top_logprobs[0].logprob


# --- length, stop and usage ---------------------------------------------------------------


@pytest.mark.parametrize("max_tokens", [1, 7, 40])
def test_max_tokens_ends_with_length_and_exact_usage(
    provider: LocalProvider, max_tokens: int
) -> None:
    for seed in range(5):
        choice = complete(provider, max_tokens=max_tokens, seed=seed, logit_bias=NO_END)
        assert choice.finish_reason == "length"
        assert choice.completion_tokens == max_tokens
        assert tokenizer.count(choice.text) == max_tokens


def test_completion_tokens_always_match_the_returned_text(provider: LocalProvider) -> None:
    for seed in range(40):
        for result in (
            provider.complete(SMALL, PROMPT, params(60, seed=seed, temperature=1.3)),
            provider.chat(SMALL, CHAT, params(60, seed=seed, temperature=1.3)),
        ):
            for choice in result.choices:
                assert choice.completion_tokens == tokenizer.count(choice.text)
                assert result.completion_tokens == choice.completion_tokens


def test_prompt_tokens_are_exact(provider: LocalProvider) -> None:
    result = provider.chat(SMALL, CHAT, params(seed=1))
    assert result.prompt_tokens == provider.count_chat_tokens(SMALL, CHAT)
    assert result.prompt_tokens == tokenizer.count(tokenizer.render_chat(CHAT))
    assert provider.complete(SMALL, PROMPT, params()).prompt_tokens == tokenizer.count(PROMPT)


def test_model_ends_naturally(provider: LocalProvider) -> None:
    choice = complete(provider, max_tokens=200, temperature=0.0)
    assert choice.finish_reason == "stop"
    assert 0 < choice.completion_tokens < 200
    reasons = {complete(provider, max_tokens=300, seed=s).finish_reason for s in range(10)}
    assert "stop" in reasons


def test_stop_sequence_cuts_before_the_stop_text(provider: LocalProvider) -> None:
    full = complete(provider, max_tokens=40, temperature=0.0, logit_bias=NO_END).text
    stop = full.split()[3]
    cut = complete(provider, max_tokens=40, temperature=0.0, logit_bias=NO_END, stop=(stop,))
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]
    assert stop not in cut.text
    assert cut.completion_tokens == tokenizer.count(cut.text)


def test_stop_sequence_spanning_tokens(provider: LocalProvider) -> None:
    full = complete(provider, max_tokens=40, temperature=0.0, logit_bias=NO_END).text
    start = len(full) // 3
    stop = full[start : start + 9]
    cut = complete(provider, max_tokens=40, temperature=0.0, logit_bias=NO_END, stop=("zz", stop))
    assert cut.text == full[: full.index(stop)]
    assert cut.finish_reason == "stop"


def test_chat_reply_has_no_leading_whitespace(provider: LocalProvider) -> None:
    for seed in range(10):
        (choice,) = provider.chat(SMALL, CHAT, params(40, seed=seed)).choices
        assert choice.text == choice.text.lstrip()
        assert choice.text


# --- sampling controls --------------------------------------------------------------------


def test_penalties_reduce_repetition(provider: LocalProvider) -> None:
    def sample(**penalty: Any) -> list[str]:
        return [
            complete(provider, max_tokens=60, seed=s, logit_bias=NO_END, **penalty).text
            for s in range(25)
        ]

    plain = repetition(sample())
    assert repetition(sample(frequency_penalty=1.5)) < plain - 0.05
    assert repetition(sample(presence_penalty=1.5)) < plain - 0.05
    greedy = complete(provider, max_tokens=60, temperature=0.0, logit_bias=NO_END).text
    greedy_penalised = complete(
        provider, max_tokens=60, temperature=0.0, logit_bias=NO_END, frequency_penalty=2.0
    ).text
    assert repetition([greedy_penalised]) < repetition([greedy])


def test_negative_penalty_increases_repetition(provider: LocalProvider) -> None:
    plain = [complete(provider, max_tokens=40, seed=s, logit_bias=NO_END).text for s in range(15)]
    boosted = [
        complete(provider, max_tokens=40, seed=s, logit_bias=NO_END, presence_penalty=-2.0).text
        for s in range(15)
    ]
    assert repetition(boosted) > repetition(plain)


def test_small_top_p_gives_fewer_distinct_outputs(provider: LocalProvider) -> None:
    def distinct(top_p: float) -> int:
        return len({complete(provider, seed=s, top_p=top_p).text for s in range(20)})

    narrow = distinct(0.05)
    assert narrow <= 2
    assert narrow < distinct(1.0)


def test_higher_temperature_gives_more_varied_output(provider: LocalProvider) -> None:
    def distinct(temperature: float) -> int:
        texts = {complete(provider, seed=s, temperature=temperature).text for s in range(20)}
        return len(texts)

    assert distinct(0.2) < distinct(1.5)


def test_logit_bias_bans_a_token(provider: LocalProvider) -> None:
    the = token_id(" the")
    vocabulary = language_model.base_model().vocabulary
    unbiased = [
        complete(provider, max_tokens=60, seed=s, logit_bias=NO_END).text for s in range(10)
    ]
    assert any(" the" in tokenizer.split(text) for text in unbiased)
    for seed in range(10):
        choice = complete(
            provider, max_tokens=60, seed=seed, logit_bias={EOT_ID: -100.0, the: -100.0}
        )
        assert " the" not in tokenizer.split(choice.text)
    assert vocabulary.piece(the) == " the"


def test_logit_bias_forces_a_token(provider: LocalProvider) -> None:
    bread = token_id(" bread")
    choice = complete(provider, max_tokens=5, seed=3, logit_bias={bread: 100.0})
    assert choice.text == " bread" * 5
    (reply,) = provider.chat(SMALL, CHAT, params(3, seed=3, logit_bias={bread: 100.0})).choices
    assert reply.text == "bread bread bread"


def test_logit_bias_ignores_unknown_ids(provider: LocalProvider) -> None:
    choice = complete(provider, seed=1, logit_bias={10**9: 100.0, -5: 100.0})
    assert choice == complete(provider, seed=1)


# --- logprobs and choices -----------------------------------------------------------------


def test_logprobs_are_real_log_probabilities(provider: LocalProvider) -> None:
    for seed in range(5):
        choice = complete(
            provider, max_tokens=20, seed=seed, logprobs=True, top_logprobs=5, logit_bias=NO_END
        )
        assert choice.logprobs is not None
        assert "".join(entry.token for entry in choice.logprobs) == choice.text
        for entry in choice.logprobs:
            assert entry.logprob <= 0.0
            top = [alt.logprob for alt in entry.top_logprobs]
            assert len(top) == 5
            assert top == sorted(top, reverse=True)
            assert all(lp <= 0.0 for lp in top)
            assert math.fsum(math.exp(lp) for lp in top) <= 1.0 + 1e-9
            if entry.token in {alt.token for alt in entry.top_logprobs}:
                listed = next(a for a in entry.top_logprobs if a.token == entry.token)
                assert listed.logprob == entry.logprob
            else:
                assert entry.logprob <= top[-1]


def test_logprobs_reflect_temperature(provider: LocalProvider) -> None:
    def first_top(temperature: float) -> float:
        choice = complete(
            provider, max_tokens=1, seed=1, temperature=temperature, logprobs=True, top_logprobs=1
        )
        assert choice.logprobs is not None
        return choice.logprobs[0].top_logprobs[0].logprob

    assert first_top(0.3) > first_top(1.0) > first_top(2.0)


def test_logprobs_absent_unless_asked(provider: LocalProvider) -> None:
    assert complete(provider, seed=1).logprobs is None


def test_n_choices_use_distinct_streams(provider: LocalProvider) -> None:
    result = provider.complete(SMALL, PROMPT, params(seed=5, n=4, logit_bias=NO_END))
    assert len(result.choices) == 4
    assert len({c.text for c in result.choices}) >= 3
    assert result.completion_tokens == sum(c.completion_tokens for c in result.choices)
    again = provider.complete(SMALL, PROMPT, params(seed=5, n=4, logit_bias=NO_END))
    assert again == result
    single = provider.complete(SMALL, PROMPT, params(seed=5, logit_bias=NO_END))
    assert single.choices[0] == result.choices[0]


def test_chat_reply_is_on_topic(provider: LocalProvider) -> None:
    (choice,) = provider.chat(SMALL, CHAT, params(60, temperature=0.0)).choices
    words = choice.text.lower()
    assert "flour" in words or "dough" in words or "bread" in words


def test_completion_continues_the_prompt(provider: LocalProvider) -> None:
    choice = complete(provider, "Cloud computing means", max_tokens=5, temperature=0.0)
    assert choice.text.startswith(" renting")


def _spec(model_id: str) -> ModelSpec:
    return REGISTRY.get(model_id)


def test_snapshot_alias_uses_the_same_model(provider: LocalProvider) -> None:
    old = provider.complete(_spec("gantry-small-2025-06"), PROMPT, params(seed=9))
    assert old == provider.complete(SMALL, PROMPT, params(seed=9))
