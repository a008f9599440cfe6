"""Fine-tuning the embedded models for real.

- `gantry-small` ("ngram-small") learns chat or prompt/completion examples: epoch *k* is
  the base model plus *k* x `learning_rate_multiplier` x `EPOCH_WEIGHT` times the trigram
  counts of the examples (rendered exactly as chat prompts are, ``role: content`` lines),
  and the examples join the passages it retrieves from. The training loss is the mean
  negative log-likelihood per token of the training examples; evaluation compares it with
  the base model's on held-out examples. A piece the base model has never seen gets the
  uniform floor's share instead of probability zero, so both losses stay finite.
- `gantry-classify` ("zero-shot") learns labelled examples as label prototypes; epoch *k*
  adds the first k/n of each label's examples, and evaluation reports the accuracy of the
  base and the tuned classifier on held-out examples over the labels seen in training.

An artifact is the JSON recipe (texts and weight, or examples per label) from which the
model is rebuilt in any process in a fraction of a second.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from gantry.adapters.local import classifier, language_model, tokenizer
from gantry.adapters.local.classifier import ZeroShotClassifier
from gantry.adapters.local.language_model import UNIFORM_FLOOR, NGramModel
from gantry.adapters.local.provider import CLASSIFIER, LANGUAGE_MODEL, LocalProvider
from gantry.adapters.local.tokenizer import EOT_ID
from gantry.domain.files import Example
from gantry.domain.registry import ModelSpec
from gantry.job_ports import Progress, TrainedModel

EPOCH_WEIGHT = 2.0
LOSS_SAMPLE = 64  # examples the per-epoch training loss is measured on
ACCURACY_SAMPLE = 512  # examples the per-epoch training accuracy is measured on


def render(example: Example) -> str:
    if example.messages:
        return "".join(f"{role}: {content}\n" for role, content in example.messages)
    return example.prompt + example.completion


def mean_loss(model: NGramModel, texts: Sequence[str]) -> float:
    """Mean negative log-likelihood per token (natural log) of `texts` under the trigrams."""
    floor = math.log(UNIFORM_FLOOR / len(model.vocabulary))
    total, count = 0.0, 0
    for text in texts:
        ids = [EOT_ID, EOT_ID, *model.vocabulary.encode(text), EOT_ID]
        for u, v, w in zip(ids, ids[1:], ids[2:], strict=False):
            total -= max(model.log_probs(u, v)[w], floor)
            count += 1
    return total / count if count else 0.0


def accuracy(model: ZeroShotClassifier, items: Sequence[Example], labels: Sequence[str]) -> float:
    if not items:
        return 0.0
    right = 0
    for item in items:
        scores = model.classify(item.text, labels)
        right += max(scores, key=lambda label: scores[label]) == item.label
    return right / len(items)


def _by_label(items: Sequence[Example]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item.text)
    return groups


class LocalTrainer:
    def __init__(self, provider: LocalProvider) -> None:
        self._provider = provider

    def example_formats(self, base: ModelSpec) -> tuple[str, ...]:
        if base.provider != "local":
            return ()
        if base.provider_model_id == LANGUAGE_MODEL:
            return ("chat", "completion")
        if base.provider_model_id == CLASSIFIER:
            return ("classification",)
        return ()

    def train(
        self,
        base: ModelSpec,
        examples: Sequence[Example],
        n_epochs: int,
        learning_rate_multiplier: float,
        progress: Progress,
        first_epoch: int = 1,
    ) -> TrainedModel | None:
        # Epoch k's model depends on k alone, so training resumes at any epoch.
        if base.provider_model_id == CLASSIFIER:
            return self._train_classifier(examples, n_epochs, progress, first_epoch)
        texts = [render(e) for e in examples]
        tokens = sum(tokenizer.count(t) for t in texts)
        start = language_model.base_model()
        sample = texts[:LOSS_SAMPLE]
        weight = 0.0
        for epoch in range(first_epoch, n_epochs + 1):
            weight = epoch * learning_rate_multiplier * EPOCH_WEIGHT
            model = start.with_extra_texts(texts, weight)
            if not progress(epoch, {"train_loss": mean_loss(model, sample)}):
                return None
        artifact = {"kind": "language_model", "weight": weight, "texts": texts}
        final = {"train_loss": mean_loss(start.with_extra_texts(texts, weight), sample)}
        return TrainedModel(_dump(artifact), tokens * n_epochs, final)

    def _train_classifier(
        self, examples: Sequence[Example], n_epochs: int, progress: Progress, first_epoch: int
    ) -> TrainedModel | None:
        groups = _by_label(examples)
        labels = sorted(groups)
        start = classifier.base_model().remembering()  # each epoch reuses the vectors
        learned: dict[str, list[str]] = {}
        sample = examples[:: -(-len(examples) // ACCURACY_SAMPLE) or 1]  # spread over the file
        for epoch in range(first_epoch, n_epochs + 1):
            learned = {
                label: texts[: max(1, math.ceil(len(texts) * epoch / n_epochs))]
                for label, texts in groups.items()
            }
            model = start.with_examples(learned)
            if not progress(epoch, {"train_accuracy": accuracy(model, sample, labels)}):
                return None
        tokens = sum(tokenizer.count(e.text) + tokenizer.count(e.label) for e in examples)
        final = {"train_accuracy": accuracy(start.with_examples(learned), sample, labels)}
        artifact = {"kind": "classifier", "examples": learned}
        return TrainedModel(_dump(artifact), tokens * n_epochs, final)

    def evaluate(
        self, base: ModelSpec, artifact: bytes, held_out: Sequence[Example]
    ) -> dict[str, float]:
        recipe = json.loads(artifact)
        if recipe["kind"] == "classifier":
            labels = sorted(recipe["examples"])
            tuned = classifier.base_model().with_examples(recipe["examples"])
            known = [e for e in held_out if e.label in recipe["examples"]]
            return {
                "accuracy": accuracy(tuned, known, labels),
                "base_accuracy": accuracy(classifier.base_model(), known, labels),
                "held_out_examples": float(len(known)),
            }
        texts = [render(e) for e in held_out] or recipe["texts"][:LOSS_SAMPLE]
        tuned_model = build_language_model(recipe)
        return {
            "valid_loss": mean_loss(tuned_model, texts),
            "base_valid_loss": mean_loss(language_model.base_model(), texts),
            "held_out_examples": float(len(held_out)),
        }

    def install(self, provider_model_id: str, base: ModelSpec, artifact: bytes) -> None:
        recipe = json.loads(artifact)
        if recipe["kind"] == "classifier":
            tuned = classifier.base_model().with_examples(recipe["examples"])
            self._provider.register_classifier(provider_model_id, tuned)
        else:
            self._provider.register_language_model(provider_model_id, build_language_model(recipe))


def build_language_model(recipe: Mapping[str, Any]) -> NGramModel:
    return language_model.base_model().with_extra_texts(recipe["texts"], float(recipe["weight"]))


def _dump(artifact: Mapping[str, Any]) -> bytes:
    return json.dumps(artifact, separators=(",", ":")).encode()
