"""`LocalProvider`: the embedded models, served in-process with no network and no downloads.

Dispatch is on `ModelSpec.provider_model_id`:

* "ngram-small"        chat and completions (`language_model`, `generation`)
* "echo"               chat and completions that return the input (`echo`)
* "hashed-embeddings"  embeddings (`embeddings`)
* "zero-shot"          classifications (`classifier`)
* "lexicon-moderation" moderations (`moderation`)

Every model counts tokens with `gantry-words-v1` (`tokenizer`). Usage is exact: a chat's
prompt tokens are the tokens of its rendering (`tokenizer.render_chat`), a completion's are
the tokens of the prompt, and completion tokens are the tokens of each returned text.
Embeddings and moderations bill the tokens of their inputs; classifications bill the inputs
plus the labels.

Models are built on first use and shared by every provider in the process; all methods are
safe to call from several threads at once. Fine-tuned language models can be served next to
the base one with `register_language_model`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from gantry.adapters.local import classifier, embeddings, language_model, moderation, tokenizer
from gantry.adapters.local.echo import echo, echo_stream
from gantry.adapters.local.generation import Generator
from gantry.adapters.local.language_model import NGramModel
from gantry.domain.errors import InvalidRequest
from gantry.domain.registry import ModelSpec
from gantry.ports import (
    ClassificationResult,
    EmbeddingResult,
    Generation,
    GenerationResult,
    Message,
    ModerationResult,
    SamplingParams,
    StreamEvent,
)

LANGUAGE_MODEL = "ngram-small"
ECHO = "echo"
PACED_ECHO = "echo-paced"  # echo at a steady 50 tokens/s, for streaming demos and benchmarks
PACE_SECONDS = 0.02
EMBEDDINGS = "hashed-embeddings"
CLASSIFIER = "zero-shot"
MODERATION = "lexicon-moderation"


class LocalProvider:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._language_models: dict[str, NGramModel] = {}
        self._generators: dict[str, Generator] = {}
        self._classifiers: dict[str, classifier.ZeroShotClassifier] = {}

    def register_language_model(self, provider_model_id: str, model: NGramModel) -> None:
        """Serve `model` (e.g. `base_model().with_extra_texts(...)`) under this id."""
        with self._lock:
            self._language_models[provider_model_id] = model
            self._generators.pop(provider_model_id, None)

    def register_classifier(
        self, provider_model_id: str, model: classifier.ZeroShotClassifier
    ) -> None:
        """Serve a classifier that learned examples (`with_examples`) under this id."""
        with self._lock:
            self._classifiers[provider_model_id] = model

    def is_instant(self, model: ModelSpec) -> bool:
        return model.provider_model_id == ECHO

    # --- tokens ---------------------------------------------------------------------------

    def count_chat_tokens(self, model: ModelSpec, messages: Sequence[Message]) -> int:
        return tokenizer.count_chat_tokens(messages)

    def count_tokens(self, model: ModelSpec, text: str) -> int:
        return tokenizer.count(text)

    # --- generation -----------------------------------------------------------------------

    def chat(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> GenerationResult:
        prompt_tokens = tokenizer.count_chat_tokens(messages)
        question = _last_user_message(messages)
        if model.provider_model_id in (ECHO, PACED_ECHO):
            return GenerationResult(_echo(model, question, params), prompt_tokens)
        generator = self._generator(model, "chat")
        prompt = tokenizer.render_chat(messages)
        choices = generator.generate(prompt, params, topic=question or prompt, reply=True)
        return GenerationResult(choices, prompt_tokens)

    def complete(self, model: ModelSpec, prompt: str, params: SamplingParams) -> GenerationResult:
        prompt_tokens = tokenizer.count(prompt)
        if model.provider_model_id in (ECHO, PACED_ECHO):
            return GenerationResult(_echo(model, prompt, params), prompt_tokens)
        choices = self._generator(model, "completions").generate(prompt, params)
        return GenerationResult(choices, prompt_tokens)

    def chat_stream(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> Iterator[StreamEvent]:
        question = _last_user_message(messages)
        if model.provider_model_id in (ECHO, PACED_ECHO):
            return echo_stream(question, params, _pace(model))
        generator = self._generator(model, "chat")
        prompt = tokenizer.render_chat(messages)
        return generator.stream(prompt, params, topic=question or prompt, reply=True)

    def complete_stream(
        self, model: ModelSpec, prompt: str, params: SamplingParams
    ) -> Iterator[StreamEvent]:
        if model.provider_model_id in (ECHO, PACED_ECHO):
            return echo_stream(prompt, params, _pace(model))
        return self._generator(model, "completions").stream(prompt, params)

    # --- other tasks ----------------------------------------------------------------------

    def embed(
        self, model: ModelSpec, inputs: Sequence[str], dimensions: int | None
    ) -> EmbeddingResult:
        _require(model, EMBEDDINGS, "embeddings")
        if dimensions is not None and not 1 <= dimensions <= embeddings.DIMENSIONS:
            raise InvalidRequest(
                f"'dimensions' must be between 1 and {embeddings.DIMENSIONS} for the model "
                f"'{model.id}'.",
                code="invalid_value",
                param="dimensions",
            )
        embedder = embeddings.base_model()
        vectors = tuple(embedder.embed(text, dimensions) for text in inputs)
        return EmbeddingResult(vectors, sum(tokenizer.count(text) for text in inputs))

    def classify(
        self, model: ModelSpec, inputs: Sequence[str], labels: Sequence[str]
    ) -> ClassificationResult:
        tuned = self._classifiers.get(model.provider_model_id)
        if tuned is None:
            _require(model, CLASSIFIER, "classifications")
        if not labels or len(set(labels)) != len(labels):
            raise InvalidRequest(
                "'labels' must be a non-empty list of distinct labels.",
                code="invalid_value",
                param="labels",
            )
        zero_shot = tuned or classifier.base_model()
        scores = tuple(zero_shot.classify(text, labels) for text in inputs)
        billed = sum(tokenizer.count(text) for text in [*inputs, *labels])
        return ClassificationResult(scores, billed)

    def moderate(self, model: ModelSpec, inputs: Sequence[str]) -> ModerationResult:
        _require(model, MODERATION, "moderations")
        verdicts = tuple(moderation.moderate(text) for text in inputs)
        return ModerationResult(verdicts, sum(tokenizer.count(text) for text in inputs))

    # --- models ---------------------------------------------------------------------------

    def _generator(self, model: ModelSpec, task: str) -> Generator:
        name = model.provider_model_id
        generator = self._generators.get(name)
        if generator is not None:
            return generator
        if name != LANGUAGE_MODEL and name not in self._language_models:
            raise _unsupported(model, task)
        with self._lock:
            generator = self._generators.get(name)
            if generator is None:
                found = self._language_models.get(name)
                generator = Generator(found if found is not None else language_model.base_model())
                self._generators[name] = generator
        return generator


def _last_user_message(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return messages[-1].content if messages else ""


def _require(model: ModelSpec, provider_model_id: str, task: str) -> None:
    if model.provider_model_id != provider_model_id:
        raise _unsupported(model, task)


def _unsupported(model: ModelSpec, task: str) -> InvalidRequest:
    return InvalidRequest(
        f"The model '{model.id}' ({model.provider_model_id}) cannot serve {task}.",
        code="model_not_supported",
        param="model",
    )


def _pace(model: ModelSpec) -> float:
    return PACE_SECONDS if model.provider_model_id == PACED_ECHO else 0.0


def _echo(model: ModelSpec, text: str, params: SamplingParams) -> tuple[Generation, ...]:
    """Buffered echo; the paced one takes as long as streaming its tokens would."""
    choices = echo(text, params)
    pace = _pace(model)
    if pace:
        time.sleep(pace * sum(c.completion_tokens for c in choices))
    return choices
