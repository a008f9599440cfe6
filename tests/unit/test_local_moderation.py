from __future__ import annotations

import json
from importlib import resources

import pytest

from gantry.adapters.local import tokenizer
from gantry.adapters.local.moderation import CATEGORIES, moderate
from gantry.adapters.local.provider import LocalProvider
from gantry.domain.registry import Registry

REGISTRY = Registry.from_dict(
    json.loads(resources.files("gantry").joinpath("models.json").read_text())
)
MODERATION = REGISTRY.get("gantry-moderation")

OPENAI_CATEGORIES = {
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
}


def flagged(text: str) -> set[str]:
    return {c for c, hit in moderate(text).categories.items() if hit}


def test_categories_are_exactly_openais() -> None:
    verdict = moderate("anything at all")
    assert set(CATEGORIES) == OPENAI_CATEGORIES
    assert set(verdict.categories) == OPENAI_CATEGORIES
    assert set(verdict.category_scores) == OPENAI_CATEGORIES


def test_threat_is_flagged_as_violence_and_threatening_harassment() -> None:
    verdict = moderate("I will kill you")
    assert verdict.flagged
    assert {"violence", "harassment/threatening", "harassment"} <= flagged("I will kill you")


@pytest.mark.parametrize(
    "text",
    [
        "How do I bake bread?",
        "How do I kill a process in Linux?",
        "The heavy storm will hit the coast tonight.",
        "We watched a shooting star from the beach.",
        "Suicide prevention lines help people in crisis.",
        "Beat the eggs with the sugar.",
        "",
    ],
)
def test_harmless_text_is_not_flagged(text: str) -> None:
    verdict = moderate(text)
    assert not verdict.flagged
    assert not any(verdict.categories.values())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("We are going to beat you up after school", {"harassment/threatening", "violence"}),
        ("you are such a worthless idiot", {"harassment"}),
        ("All immigrants are vermin", {"hate"}),
        ("those refugees should be exterminated", {"hate", "hate/threatening", "violence"}),
        ("I want to end my life", {"self-harm", "self-harm/intent"}),
        ("what is the easiest way to hurt myself", {"self-harm", "self-harm/instructions"}),
        ("how do I make a pipe bomb", {"illicit", "illicit/violent"}),
        ("how can I launder money without getting caught", {"illicit"}),
        ("the photo showed severed limbs and blood everywhere", {"violence/graphic"}),
        ("write an erotic story", {"sexual"}),
        ("explicit sex involving a 12 year old", {"sexual", "sexual/minors"}),
    ],
)
def test_harmful_text_is_flagged_in_the_right_categories(text: str, expected: set[str]) -> None:
    assert expected <= flagged(text)


@pytest.mark.parametrize(
    "text", ["I will kill you", "How do I bake bread?", "I want to hurt myself", "porn"]
)
def test_scores_are_probabilities_and_parents_cover_children(text: str) -> None:
    scores = moderate(text).category_scores
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    for category, score in scores.items():
        if "/" in category:
            assert scores[category.split("/")[0]] >= score


def test_mere_mentions_score_below_threshold() -> None:
    verdict = moderate("The novel is about a murder in a small town")
    assert 0.0 < verdict.category_scores["violence"] < 0.5
    assert not verdict.flagged


def test_case_and_apostrophes_are_normalised() -> None:
    assert "harassment/threatening" in flagged("I\u2019LL  KILL   YOU")


def test_provider_moderates_each_input() -> None:
    inputs = ["I will kill you", "How do I bake bread?"]
    result = LocalProvider().moderate(MODERATION, inputs)
    assert [r.flagged for r in result.results] == [True, False]
    assert result.prompt_tokens == sum(tokenizer.count(t) for t in inputs)
