"""Inference rules: which model serves a request, which parameters it supports, whether the
prompt fits, and what the call costs. Providers do the work; this decides what is allowed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Generic, TypeVar

from gantry.domain.errors import ContextLengthExceeded, InvalidRequest
from gantry.domain.lifecycle import ensure_model_available
from gantry.domain.metering import Estimate
from gantry.domain.model_router import ModelRouter, Prepared, Served
from gantry.domain.registry import ModelSpec, Registry
from gantry.ports import (
    ClassificationResult,
    Clock,
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
    # Prompt tokens served from the response cache: a hit is billed at the cached price.
    cached_tokens: int = field(default=0, kw_only=True)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_usd(self) -> float:
        if self.cached_tokens:
            return self.spec.cached_cost_usd(self.prompt_tokens, self.completion_tokens)
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
    # What the provider is asked, normalised (defaults filled in): the identity of a
    # cacheable call. None for calls that are never cached.
    call: Mapping[str, Any] | None = None
    # Same call, same answer: no sampling, temperature 0, or a seed.
    deterministic: bool = False
    # Set when a stream starts: the model serving it (a fallback, when the model failed).
    served: Served = field(default_factory=Served)

    def as_served(self) -> Plan[OutcomeT]:
        """This plan as the model that served its stream (itself unless a fallback did)."""
        spec, tokens = self.served.spec, self.served.prompt_tokens
        if spec is None or spec is self.spec:
            return self
        prompt_tokens = self.prompt_tokens if tokens is None else tokens
        return replace(self, spec=spec, prompt_tokens=prompt_tokens)


MAX_EMBEDDING_INPUTS = 2048


class InferenceService:
    """Validates requests against the model that serves them and plans the provider call.

    Planning does everything that can refuse a request (model, parameters, context window)
    without calling the model, so the caller can admit the estimate against its limits
    before `plan.run()` spends anything.
    """

    def __init__(
        self,
        registry: Registry,
        providers: Mapping[str, ModelProvider],
        clock: Clock | None = None,
        router: ModelRouter | None = None,
    ) -> None:
        self.registry = registry
        self._providers = providers
        self._clock = clock
        # Retries, circuit breakers, hedging and fallbacks around every provider call.
        self._router = router or ModelRouter(registry, providers)

    def _resolve(self, model_id: str, capability: str) -> ModelSpec:
        """The model for this capability, refused with 410 once it is past its sunset."""
        spec = self.registry.for_capability(model_id, capability)
        if self._clock is not None:
            ensure_model_available(spec, self._clock.now())
        return spec

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
        spec = self._resolve(model_id, "chat")
        provider = self.provider(spec)
        prompt_tokens = provider.count_chat_tokens(spec, messages)
        params = self._params(spec, sampling, prompt_tokens)
        call = {
            "messages": [[m.role, m.content, m.name] for m in messages],
            "params": _params_identity(params),
        }

        served = Served()

        def planned(s: ModelSpec, p: ModelProvider) -> tuple[SamplingParams, int]:
            if s is spec:
                return params, prompt_tokens
            tokens = p.count_chat_tokens(s, messages)
            return self._params(s, sampling, tokens), tokens

        def buffered(s: ModelSpec, p: ModelProvider) -> Prepared[GenerationResult]:
            ps, tokens = planned(s, p)
            return Prepared(lambda: p.chat(s, messages, ps), tokens)

        def streamed(s: ModelSpec, p: ModelProvider) -> Prepared[Iterator[StreamEvent]]:
            ps, tokens = planned(s, p)
            return Prepared(lambda: p.chat_stream(s, messages, ps), tokens)

        def run() -> GenerationOutcome:
            by, result = self._router.call(spec, "chat", buffered)
            return GenerationOutcome(by, result.prompt_tokens, result.completion_tokens, result)

        def stream() -> Iterator[StreamEvent]:
            return self._router.stream(spec, "chat", streamed, served)

        estimate = self._estimate(spec, prompt_tokens, params.max_tokens * params.n)
        instant = provider.is_instant(spec)
        return Plan(
            spec,
            "chat.completions",
            estimate,
            instant,
            run,
            prompt_tokens,
            stream,
            call,
            _deterministic(params),
            served,
        )

    def plan_completion(
        self, model_id: str, prompts: Sequence[str], sampling: Sampling
    ) -> Plan[CompletionOutcome]:
        spec = self._resolve(model_id, "completions")
        provider = self.provider(spec)
        counted = [provider.count_tokens(spec, prompt) for prompt in prompts]
        plans = [self._params(spec, sampling, tokens) for tokens in counted]

        served = Served()

        def planned(s: ModelSpec, p: ModelProvider) -> tuple[list[SamplingParams], list[int]]:
            if s is spec:
                return plans, counted
            tokens = [p.count_tokens(s, prompt) for prompt in prompts]
            return [self._params(s, sampling, t) for t in tokens], tokens

        def buffered(s: ModelSpec, p: ModelProvider) -> Prepared[tuple[GenerationResult, ...]]:
            ps, tokens = planned(s, p)
            return Prepared(
                lambda: tuple(p.complete(s, x, q) for x, q in zip(prompts, ps, strict=True)),
                sum(tokens),
            )

        def streamed(s: ModelSpec, p: ModelProvider) -> Prepared[Iterator[StreamEvent]]:
            ps, tokens = planned(s, p)

            def events() -> Iterator[StreamEvent]:
                """Prompt after prompt; choice `i` of prompt `k` is index `k * n + i`."""
                for number, (prompt, params) in enumerate(zip(prompts, ps, strict=True)):
                    offset = number * params.n
                    for event in p.complete_stream(s, prompt, params):
                        yield replace(event, index=event.index + offset)

            return Prepared(events, sum(tokens))

        def run() -> CompletionOutcome:
            by, results = self._router.call(spec, "completions", buffered)
            return CompletionOutcome(
                by,
                sum(r.prompt_tokens for r in results),
                sum(r.completion_tokens for r in results),
                results,
            )

        def stream() -> Iterator[StreamEvent]:
            return self._router.stream(spec, "completions", streamed, served)

        reserved = sum(p.max_tokens * p.n for p in plans)
        estimate = self._estimate(spec, sum(counted), reserved)
        instant = provider.is_instant(spec)
        call = {"prompts": list(prompts), "params": [_params_identity(p) for p in plans]}
        deterministic = all(_deterministic(p) for p in plans)
        return Plan(
            spec,
            "completions",
            estimate,
            instant,
            run,
            sum(counted),
            stream,
            call,
            deterministic,
            served,
        )

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
        spec = self._resolve(model_id, "embeddings")
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

        def attempt(s: ModelSpec, p: ModelProvider) -> Prepared[EmbeddingResult]:
            size = s.embedding_dimensions
            if s is not spec and dimensions is not None and size is not None and dimensions > size:
                raise InvalidRequest("too few dimensions", code="invalid_value", param="dimensions")
            return Prepared(lambda: p.embed(s, inputs, dimensions))

        def run() -> EmbeddingOutcome:
            by, result = self._router.call(spec, "embeddings", attempt, hedge=True)
            return EmbeddingOutcome(by, result.prompt_tokens, 0, result)

        call = {"inputs": list(inputs), "dimensions": dimensions}
        estimate = self._estimate(spec, total, 0)
        return Plan(spec, "embeddings", estimate, False, run, call=call, deterministic=True)

    def plan_classification(
        self, model_id: str, inputs: Sequence[str], labels: Sequence[str]
    ) -> Plan[ClassificationOutcome]:
        spec = self._resolve(model_id, "classifications")
        provider = self.provider(spec)
        total = sum(provider.count_tokens(spec, t) for t in [*inputs, *labels])

        def attempt(s: ModelSpec, p: ModelProvider) -> Prepared[ClassificationResult]:
            return Prepared(lambda: p.classify(s, inputs, labels))

        def run() -> ClassificationOutcome:
            by, result = self._router.call(spec, "classifications", attempt, hedge=True)
            return ClassificationOutcome(by, result.prompt_tokens, 0, result)

        call = {"inputs": list(inputs), "labels": list(labels)}
        estimate = self._estimate(spec, total, 0)
        return Plan(spec, "classifications", estimate, False, run, call=call, deterministic=True)

    def plan_moderation(self, model_id: str, inputs: Sequence[str]) -> Plan[ModerationOutcome]:
        spec = self._resolve(model_id, "moderations")
        provider = self.provider(spec)
        total = sum(provider.count_tokens(spec, t) for t in inputs)

        def attempt(s: ModelSpec, p: ModelProvider) -> Prepared[ModerationResult]:
            return Prepared(lambda: p.moderate(s, inputs))

        def run() -> ModerationOutcome:
            by, result = self._router.call(spec, "moderations", attempt, hedge=True)
            return ModerationOutcome(by, result.prompt_tokens, 0, result)

        return Plan(spec, "moderations", self._estimate(spec, total, 0), False, run)


def _params_identity(params: SamplingParams) -> dict[str, Any]:
    # Every field, so a parameter added later can never be left out of the cache key.
    identity = {f.name: getattr(params, f.name) for f in fields(params)}
    identity["logit_bias"] = {str(k): v for k, v in sorted(params.logit_bias.items())}
    identity["stop"] = list(params.stop)
    return identity


def _deterministic(params: SamplingParams) -> bool:
    return params.temperature == 0 or params.seed is not None


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
