from __future__ import annotations

import json
import math
from importlib import resources

import pytest

from gantry.adapters.local import corpus, embeddings, tokenizer
from gantry.adapters.local.embeddings import EmbeddingModel, cosine
from gantry.adapters.local.provider import LocalProvider
from gantry.domain.errors import InvalidRequest
from gantry.domain.registry import Registry

REGISTRY = Registry.from_dict(
    json.loads(resources.files("gantry").joinpath("models.json").read_text())
)
EMBED = REGISTRY.get("gantry-embed-small")


def norm(vector: tuple[float, ...]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    return embeddings.base_model()


@pytest.mark.parametrize(
    "text", ["Hello world", "", "!!!", "a", "The same word the same word", "東京 café 2026"]
)
def test_vectors_are_unit_length_and_full_size(model: EmbeddingModel, text: str) -> None:
    vector = model.embed(text)
    assert len(vector) == EMBED.embedding_dimensions == embeddings.DIMENSIONS
    assert norm(vector) == pytest.approx(1.0)


@pytest.mark.parametrize("dimensions", [1, 8, 64, 255, 256])
def test_dimensions_truncate_then_renormalise(model: EmbeddingModel, dimensions: int) -> None:
    text = "Serverless functions scale to zero when idle"
    full = model.embed(text)
    short = model.embed(text, dimensions)
    assert len(short) == dimensions
    assert norm(short) == pytest.approx(1.0)
    head = full[:dimensions]
    scale = norm(head)
    assert short == pytest.approx(tuple(x / scale for x in head))


def test_vectors_are_deterministic_across_instances(model: EmbeddingModel) -> None:
    fresh = EmbeddingModel(corpus.documents())
    text = "A cold front brings rain and wind"
    assert fresh.embed(text) == model.embed(text)
    assert model.embed(text) == model.embed(text)


def test_identical_texts_have_similarity_one(model: EmbeddingModel) -> None:
    vector = model.embed("identical text")
    assert cosine(vector, model.embed("identical text")) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("anchor", "related", "unrelated"),
    [
        (
            "How do I bake bread at home?",
            "A recipe for baking a loaf",
            "The database ran out of memory",
        ),
        ("It is raining heavily outside", "Expect storms and wet weather", "Deploy the container"),
        ("The stock market fell sharply", "Shares dropped as investors worried", "The team won"),
        ("My flight was delayed", "The train to the city was late", "Knead the dough until smooth"),
        ("thunder and lightning", "a heavy storm", "a database index"),
        ("kubernetes cluster", "containers on many machines", "pasta with tomato sauce"),
        ("a sunny day at the beach", "swimming in the sea in summer", "compile the program"),
        ("vaccines and the immune system", "doctors and hospitals", "a guitar concert"),
        ("password manager", "encryption keeps accounts safe", "a walk in the mountains"),
        ("boiling pasta in salted water", "cooking rice on the stove", "the price of bonds"),
        ("planting tomatoes in the garden", "plants need water and sunlight", "rate limiting"),
        ("load balancer", "spreads requests across servers", "a birthday cake"),
    ],
)
def test_related_texts_are_closer_than_unrelated(
    model: EmbeddingModel, anchor: str, related: str, unrelated: str
) -> None:
    a = model.embed(anchor)
    assert cosine(a, model.embed(related)) > cosine(a, model.embed(unrelated))


def test_spelling_variants_are_close(model: EmbeddingModel) -> None:
    a = model.embed("serverless")
    assert cosine(a, model.embed("servers")) > cosine(a, model.embed("weather"))


def test_provider_embeds_with_usage() -> None:
    inputs = ["first text", "a second, longer text"]
    result = LocalProvider().embed(EMBED, inputs, None)
    assert len(result.vectors) == 2
    assert result.prompt_tokens == sum(tokenizer.count(t) for t in inputs)
    short = LocalProvider().embed(EMBED, inputs, 32)
    assert {len(v) for v in short.vectors} == {32}


@pytest.mark.parametrize("dimensions", [0, -1, 257])
def test_provider_rejects_invalid_dimensions(dimensions: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        LocalProvider().embed(EMBED, ["x"], dimensions)
    assert caught.value.param == "dimensions"


def test_only_the_embedding_model_embeds() -> None:
    with pytest.raises(InvalidRequest) as caught:
        LocalProvider().embed(REGISTRY.get("gantry-small"), ["x"], None)
    assert caught.value.param == "model"
