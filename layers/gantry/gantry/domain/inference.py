"""Inference rules: which model serves a request, which parameters it supports, whether the
prompt fits, and what the call costs. Providers do the work; this decides what is allowed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from gantry.domain.errors import ContextLengthExceeded, InvalidRequest
from gantry.domain.metering import Estimate
from gantry.domain.registry import ModelSpec, Registry
from gantry.ports import (
    ClassificationResult,
    EmbeddingResult,
    GenerationResult,
    Message,
    ModelProvider,
    ModerationResult,
    SamplingParams,
    StreamEvent,
)


@dataclass(frozen=True)
class Sampling:
    """Generation controls as the caller sent them (None = not given)."""

    max_tokens: int | None = None
    max_tokens_param: str = "max_tokens"
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    # parameter name -> capability the model needs to honour it
    features: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    spec: ModelSpec
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> float:
        return self.spec.cost_usd(self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True)
class GenerationOutcome(Outcome):
    result: GenerationResult


@dataclass(frozen=True)
class CompletionOutcome(Outcome):
    """One generation result per prompt of a legacy completions request."""

    results: tuple[GenerationResult, ...]


@dataclass(frozen=True)
class EmbeddingOutcome(Outcome):
    result: EmbeddingResult


@dataclass(frozen=True)
class ClassificationOutcome(Outcome):
    result: ClassificationResult


@dataclass(frozen=True)
class ModerationOutcome(Outcome):
    result: ModerationResult


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


@dataclass(frozen=True)
class Plan(Generic[OutcomeT]):
    """A validated request, ready to run: what it may cost, and the call that runs it."""

    spec: ModelSpec
    endpoint: str
    estimate: Estimate
    instant: bool
    run: Callable[[], OutcomeT]
    prompt_tokens: int = 0
    # The same call, streamed (generation only): choices one after another.
    stream: Callable[[], Iterator[StreamEvent]] | None = None


MAX_EMBEDDING_INPUTS = 2048


class InferenceService:
    """Validates requests against the model that serves them and plans the provider call.

    Planning does everything that can refuse a request (model, parameters, context window)
    without calling the model, so the caller can admit the estimate against its limits
    before `plan.run()` spends anything.
    """

    def __init__(self, registry: Registry, providers: Mapping[str, ModelProvider]) -> None:
        self.registry = registry
        self._providers = providers

    def provider(self, spec: ModelSpec) -> ModelProvider:
        provider = self._providers.get(spec.provider)
        if provider is None:
            raise InvalidRequest(
                f"The model '{spec.id}' is served by provider '{spec.provider}', which is not "
                "configured on this deployment.",
                code="model_not_available",
                param="model",
            )
        return provider

    def _estimate(self, spec: ModelSpec, prompt_tokens: int, completion_tokens: int) -> Estimate:
        return Estimate(
            tokens=prompt_tokens + completion_tokens,
            cost_usd=spec.cost_usd(prompt_tokens, completion_tokens),
        )

    # --- generation ---------------------------------------------------------------------

    def plan_chat(
        self, model_id: str, messages: Sequence[Message], sampling: Sampling
    ) -> Plan[GenerationOutcome]:
        spec = self.registry.for_capability(model_id, "chat")
        provider = self.provider(spec)
        prompt_tokens = provider.count_chat_tokens(spec, messages)
        params = self._params(spec, sampling, prompt_tokens)

        def run() -> GenerationOutcome:
            result = provider.chat(spec, messages, params)
            return GenerationOutcome(spec, result.prompt_tokens, result.completion_tokens, result)

        def stream() -> Iterator[StreamEvent]:
            return provider.chat_stream(spec, messages, params)

        estimate = self._estimate(spec, prompt_tokens, params.max_tokens * params.n)
        instant = provider.is_instant(spec)
        return Plan(spec, "chat.completions", estimate, instant, run, prompt_tokens, stream)

    def plan_completion(
        self, model_id: str, prompts: Sequence[str], sampling: Sampling
    ) -> Plan[CompletionOutcome]:
        spec = self.registry.for_capability(model_id, "completions")
        provider = self.provider(spec)
        counted = [provider.count_tokens(spec, prompt) for prompt in prompts]
        plans = [self._params(spec, sampling, tokens) for tokens in counted]

        def run() -> CompletionOutcome:
            results = tuple(
                provider.complete(spec, prompt, params)
                for prompt, params in zip(prompts, plans, strict=True)
            )
            return CompletionOutcome(
                spec,
                sum(r.prompt_tokens for r in results),
                sum(r.completion_tokens for r in results),
                results,
            )

        def stream() -> Iterator[StreamEvent]:
            """Prompt after prompt; choice `i` of prompt `p` is index `p * n + i`."""
            for number, (prompt, params) in enumerate(zip(prompts, plans, strict=True)):
                offset = number * params.n
                for event in provider.complete_stream(spec, prompt, params):
                    yield replace(event, index=event.index + offset)

        reserved = sum(p.max_tokens * p.n for p in plans)
        estimate = self._estimate(spec, sum(counted), reserved)
        instant = provider.is_instant(spec)
        return Plan(spec, "completions", estimate, instant, run, sum(counted), stream)

    def _params(self, spec: ModelSpec, sampling: Sampling, prompt_tokens: int) -> SamplingParams:
        for param, capability in sampling.features.items():
            if not spec.supports(capability):
                raise InvalidRequest(
                    f"The model '{spec.id}' does not support '{param}'. Remove it, or use a "
                    "model whose capabilities (GET /v1/models) include "
                    f"'{capability}'.",
                    code="unsupported_parameter",
                    param=param,
                )
        if sampling.top_logprobs and not sampling.logprobs:
            raise InvalidRequest(
                "'top_logprobs' requires 'logprobs' to be true.",
                code="invalid_value",
                param="top_logprobs",
            )
        max_tokens = self._max_tokens(spec, sampling, prompt_tokens)
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if sampling.temperature is None else sampling.temperature,
            top_p=1.0 if sampling.top_p is None else sampling.top_p,
            presence_penalty=sampling.presence_penalty or 0.0,
            frequency_penalty=sampling.frequency_penalty or 0.0,
            stop=sampling.stop,
            seed=sampling.seed,
            n=sampling.n,
            logprobs=sampling.logprobs,
            top_logprobs=sampling.top_logprobs,
            logit_bias=dict(sampling.logit_bias),
        )

    def _max_tokens(self, spec: ModelSpec, sampling: Sampling, prompt_tokens: int) -> int:
        room = spec.context_window - prompt_tokens
        requested = sampling.max_tokens
        if requested is not None and requested > spec.max_output_tokens:
            raise InvalidRequest(
                f"'{sampling.max_tokens_param}' is {requested}, but the model '{spec.id}' "
                f"produces at most {spec.max_output_tokens} tokens per response. Use a value "
                f"from 1 to {spec.max_output_tokens}.",
                code="invalid_value",
                param=sampling.max_tokens_param,
            )
        wanted = requested if requested is not None else min(spec.max_output_tokens, room)
        if room < 1 or wanted > room:
            raise context_exceeded(spec, prompt_tokens, requested or 0, "messages")
        return wanted

    # --- other tasks --------------------------------------------------------------------

    def plan_embedding(
        self, model_id: str, inputs: Sequence[str], dimensions: int | None
    ) -> Plan[EmbeddingOutcome]:
        spec = self.registry.for_capability(model_id, "embeddings")
        provider = self.provider(spec)
        full = spec.embedding_dimensions
        if dimensions is not None and full is not None and not 1 <= dimensions <= full:
            raise InvalidRequest(
                f"'dimensions' must be between 1 and {full} for the model '{spec.id}'.",
                code="invalid_value",
                param="dimensions",
            )
        total = 0
        for index, text in enumerate(inputs):
            tokens = provider.count_tokens(spec, text)
            if tokens > spec.context_window:
                raise context_exceeded(spec, tokens, 0, f"input[{index}]")
            total += tokens

        def run() -> EmbeddingOutcome:
            result = provider.embed(spec, inputs, dimensions)
            return EmbeddingOutcome(spec, result.prompt_tokens, 0, result)

        return Plan(spec, "embeddings", self._estimate(spec, total, 0), False, run)

    def plan_classification(
        self, model_id: str, inputs: Sequence[str], labels: Sequence[str]
    ) -> Plan[ClassificationOutcome]:
        spec = self.registry.for_capability(model_id, "classifications")
        provider = self.provider(spec)
        total = sum(provider.count_tokens(spec, t) for t in [*inputs, *labels])

        def run() -> ClassificationOutcome:
            result = provider.classify(spec, inputs, labels)
            return ClassificationOutcome(spec, result.prompt_tokens, 0, result)

        return Plan(spec, "classifications", self._estimate(spec, total, 0), False, run)

    def plan_moderation(self, model_id: str, inputs: Sequence[str]) -> Plan[ModerationOutcome]:
        spec = self.registry.for_capability(model_id, "moderations")
        provider = self.provider(spec)
        total = sum(provider.count_tokens(spec, t) for t in inputs)

        def run() -> ModerationOutcome:
            result = provider.moderate(spec, inputs)
            return ModerationOutcome(spec, result.prompt_tokens, 0, result)

        return Plan(spec, "moderations", self._estimate(spec, total, 0), False, run)


def context_exceeded(
    spec: ModelSpec, prompt_tokens: int, max_tokens: int, param: str
) -> ContextLengthExceeded:
    return ContextLengthExceeded(
        f"This model's maximum context length is {spec.context_window} tokens. However, you "
        f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, "
        f"{max_tokens} for the completion). Shorten the prompt or lower max_tokens.",
        param=param,
        details={
            "prompt_tokens": prompt_tokens,
            "max_tokens": max_tokens,
            "context_window": spec.context_window,
        },
    )
