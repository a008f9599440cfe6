from __future__ import annotations

import json
from collections import Counter
from importlib import resources

import pytest

from gantry.adapters.local import classifier, tokenizer
from gantry.adapters.local.classifier import ZeroShotClassifier
from gantry.adapters.local.provider import LocalProvider
from gantry.domain.errors import InvalidRequest
from gantry.domain.registry import Registry

REGISTRY = Registry.from_dict(
    json.loads(resources.files("gantry").joinpath("models.json").read_text())
)
CLASSIFY = REGISTRY.get("gantry-classify")


@pytest.fixture(scope="module")
def model() -> ZeroShotClassifier:
    return classifier.base_model()


def best(scores: dict[str, float]) -> str:
    return max(scores, key=scores.__getitem__)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("I love this movie, it was wonderful", ["positive", "negative"], "positive"),
        ("The service was slow and the food was cold", ["positive", "negative"], "negative"),
        ("the stock market fell sharply today", ["finance", "sports", "cooking"], "finance"),
        ("Our team scored in the last minute to win", ["finance", "sports", "cooking"], "sports"),
        ("Whisk the eggs and fold in the flour", ["finance", "sports", "cooking"], "cooking"),
        ("It will snow heavily tonight", ["weather", "travel", "technology"], "weather"),
        ("Book a cheap flight to Rome", ["weather", "travel", "technology"], "travel"),
        ("The database server needs more memory", ["technology", "travel", "health"], "technology"),
        ("hello there", ["greeting", "farewell"], "greeting"),
        ("Cats purr and dogs bark", ["animals", "machines"], "animals"),
    ],
)
def test_ranks_the_right_label(
    model: ZeroShotClassifier, text: str, labels: list[str], expected: str
) -> None:
    scores = model.classify(text, labels)
    assert list(scores) == labels
    assert sum(scores.values()) == pytest.approx(1.0)
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert best(scores) == expected


def test_single_label_gets_everything(model: ZeroShotClassifier) -> None:
    assert model.classify("anything", ["only"]) == {"only": pytest.approx(1.0)}


def test_learns_from_labelled_examples(model: ZeroShotClassifier) -> None:
    labels = ["ticket-a", "ticket-b"]
    trained = model.with_examples(
        {
            "ticket-a": ["my invoice shows the wrong amount", "refund the double charge"],
            "ticket-b": ["the app crashes on start", "login page shows an error"],
        }
    )
    assert best(trained.classify("I was charged twice on my invoice", labels)) == "ticket-a"
    assert best(trained.classify("the app shows an error and crashes", labels)) == "ticket-b"
    more = trained.with_examples({"ticket-a": ["billing question"]})
    assert more.examples["ticket-a"][-1] == "billing question"
    assert len(more.examples["ticket-b"]) == 2


def test_provider_scores_each_input_and_bills_inputs_and_labels() -> None:
    inputs = ["I love it", "I hate it"]
    labels = ["positive", "negative"]
    result = LocalProvider().classify(CLASSIFY, inputs, labels)
    assert [best(dict(s)) for s in result.scores] == ["positive", "negative"]
    assert result.prompt_tokens == sum(tokenizer.count(t) for t in inputs + labels)


@pytest.mark.parametrize("labels", [[], ["a", "a"]])
def test_provider_rejects_bad_labels(labels: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        LocalProvider().classify(CLASSIFY, ["x"], labels)
    assert caught.value.param == "labels"


def test_training_embeds_each_example_once_and_answers_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fine-tuning builds a classifier per epoch from the same examples: derived from a
    remembering classifier, they embed each example once, with unchanged answers."""
    base = classifier.base_model()
    embedded: Counter[str] = Counter()
    embed = base.embedder.embed

    def counting(text: str, dimensions: int | None = None) -> tuple[float, ...]:
        embedded[text] += 1
        return embed(text, dimensions)

    monkeypatch.setattr(base.embedder, "embed", counting)
    examples = {
        "billing": ["my invoice is wrong", "please refund my card"],
        "shipping": ["where is my parcel", "the courier lost the box"],
    }
    labels = ["billing", "shipping"]
    start = base.remembering()
    epochs = [start.with_examples(examples).classify("refund the invoice", labels)]
    epochs.append(start.with_examples(examples).classify("refund the invoice", labels))
    assert embedded["my invoice is wrong"] == embedded["the courier lost the box"] == 1
    assert (
        epochs[0]
        == epochs[1]
        == base.with_examples(examples).classify("refund the invoice", labels)
    )
