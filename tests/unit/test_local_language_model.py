from __future__ import annotations

import math

import pytest

from gantry.adapters.local import corpus, language_model
from gantry.adapters.local.generation import Generator
from gantry.adapters.local.language_model import NGramModel
from gantry.adapters.local.tokenizer import EOT_ID, UNK_ID
from gantry.ports import SamplingParams


@pytest.fixture(scope="module")
def model() -> NGramModel:
    return language_model.base_model()


def test_corpus_is_bundled_and_substantial() -> None:
    docs = corpus.documents()
    size = sum(len(doc) for doc in docs)
    assert len(docs) > 200
    assert 60_000 < size < 150_000
    assert any(doc.startswith("user: ") and "\nassistant: " in doc for doc in docs)


def test_base_model_is_cached(model: NGramModel) -> None:
    assert language_model.base_model() is model


@pytest.mark.parametrize(
    "prefix", ["", "The weather today is", "user: hi\nassistant:", "zzqx unknown words"]
)
def test_next_token_distribution_is_normalised(model: NGramModel, prefix: str) -> None:
    u, v = model.context(prefix)
    probabilities = [math.exp(lp) for lp in model.log_probs(u, v)]
    assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-9)
    assert probabilities[UNK_ID] == 0.0
    assert all(p > 0 for i, p in enumerate(probabilities) if i != UNK_ID)


def test_passage_mixture_stays_normalised(model: NGramModel) -> None:
    passage = model.passage("How do I bake bread?")
    assert passage is not None
    u, v = model.context("user: How do I bake bread?\nassistant:")
    mixed = [math.exp(lp) for lp in model.log_probs(u, v, passage)]
    assert math.fsum(mixed) == pytest.approx(1.0, abs=1e-9)


def test_trigram_statistics_follow_the_corpus(model: NGramModel) -> None:
    u, v = model.context("Cloud computing means")
    log_probs = model.log_probs(u, v)
    best = max(range(len(log_probs)), key=log_probs.__getitem__)
    assert model.vocabulary.piece(best) == " renting"


def test_documents_end_with_end_of_text(model: NGramModel) -> None:
    u, v = model.context("Goodbye! Have a lovely day.")
    log_probs = model.log_probs(u, v)
    assert max(range(len(log_probs)), key=log_probs.__getitem__) == EOT_ID


def test_train_from_scratch_learns_the_texts() -> None:
    small = NGramModel.train(["the red fox jumps over the lazy dog"] * 3)
    generator = Generator(small)
    params = SamplingParams(max_tokens=20, temperature=0)
    (choice,) = generator.generate("the red", params)
    assert choice.text == " fox jumps over the lazy dog"
    assert choice.finish_reason == "stop"


def test_fine_tuning_adds_texts_and_keeps_token_ids(model: NGramModel) -> None:
    tuned = model.with_extra_texts(["Gantry ships the zorblax widget to every customer."], 5.0)
    assert tuned.vocabulary.pieces[: len(model.vocabulary)] == model.vocabulary.pieces
    assert model.vocabulary.id_of(" zorblax") == UNK_ID
    assert tuned.vocabulary.id_of(" zorblax") >= len(model.vocabulary)
    (choice,) = Generator(tuned).generate("Gantry ships the", SamplingParams(20, temperature=0))
    assert choice.text.startswith(" zorblax widget")
    assert len(tuned.counts) > len(model.counts)


def test_reported_logprob_is_the_models_log_probability(model: NGramModel) -> None:
    prompt = "The weather today is"
    (choice,) = Generator(model).generate(
        prompt, SamplingParams(max_tokens=1, seed=4, logprobs=True, top_logprobs=3)
    )
    assert choice.logprobs is not None
    (entry,) = choice.logprobs
    u, v = model.context(prompt)
    expected = model.log_probs(u, v, model.passage(prompt))
    assert entry.logprob == pytest.approx(expected[model.vocabulary.id_of(entry.token)])
    best = sorted(expected, reverse=True)[:3]
    assert [alt.logprob for alt in entry.top_logprobs] == pytest.approx(best)
