"""Which model serves a planned call: the one asked for, or its registry fallbacks in order
when its provider fails (circuit open, outage, timeout, invalid output).

A fallback must support the same capability and accept the request (its own context window
and parameters); otherwise it is skipped. The model that served is returned with the
result, so the response can report it (`x-gantry-fallback-model`) and price it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from gantry.domain.errors import InvalidRequest
from gantry.domain.provider_errors import is_provider_failure
from gantry.domain.registry import ModelSpec, Registry
from gantry.domain.resilience import Resilience
from gantry.ports import ModelProvider

logger = logging.getLogger("gantry.inference")

T = TypeVar("T")
E = TypeVar("E")


@dataclass(frozen=True)
class Prepared(Generic[T]):
    """A call ready to run on one model, and the prompt tokens it was planned with."""

    call: Callable[[], T]
    prompt_tokens: int = 0


# Plans the call for a candidate model (may raise InvalidRequest: the model cannot take it).
Prepare = Callable[[ModelSpec, ModelProvider], Prepared[T]]


@dataclass
class Served:
    """Filled in when a streamed call starts: the model that serves it."""

    spec: ModelSpec | None = None
    prompt_tokens: int | None = None


class ModelRouter:
    def __init__(
        self,
        registry: Registry,
        providers: Mapping[str, ModelProvider],
        resilience: Resilience | None = None,
    ) -> None:
        self._registry = registry
        self._providers = providers
        self.resilience = resilience or Resilience()

    def candidates(self, spec: ModelSpec, capability: str) -> Iterator[ModelSpec]:
        """The model, then each fallback that exists, has a provider and the capability."""
        yield spec
        seen = {spec.id}
        for model_id in spec.policy.fallbacks:
            fallback = self._registry.find(model_id)
            if fallback is None or model_id in seen:
                if fallback is None:
                    logger.warning("fallback %s of %s is not in the registry", model_id, spec.id)
                continue
            seen.add(model_id)
            if fallback.supports(capability) and fallback.provider in self._providers:
                yield fallback

    def call(
        self,
        spec: ModelSpec,
        capability: str,
        prepare: Prepare[T],
        hedge: bool = False,
    ) -> tuple[ModelSpec, T]:
        budget = self.resilience.budget()
        first_error: BaseException | None = None
        for candidate in self.candidates(spec, capability):
            if candidate is not spec and budget.expired:
                break
            prepared = self._prepare(spec, candidate, prepare)
            if prepared is None:
                continue
            try:
                return candidate, self.resilience.call(candidate, prepared.call, budget, hedge)
            except Exception as error:
                if not is_provider_failure(error):
                    raise
                first_error = first_error or error
                self._log_fallback(candidate, error)
        assert first_error is not None
        raise first_error

    def stream(
        self,
        spec: ModelSpec,
        capability: str,
        prepare: Prepare[Iterator[E]],
        served: Served,
    ) -> Iterator[E]:
        budget = self.resilience.budget()
        first_error: BaseException | None = None
        for candidate in self.candidates(spec, capability):
            if candidate is not spec and budget.expired:
                break
            prepared = self._prepare(spec, candidate, prepare)
            if prepared is None:
                continue
            events = self.resilience.open_stream(candidate, prepared.call, budget)
            try:
                first = next(events)
            except StopIteration:
                served.spec, served.prompt_tokens = candidate, prepared.prompt_tokens
                return
            except Exception as error:
                if not is_provider_failure(error):
                    raise
                first_error = first_error or error
                self._log_fallback(candidate, error)
                continue
            served.spec, served.prompt_tokens = candidate, prepared.prompt_tokens
            try:
                yield first
                yield from events
            finally:
                events.close()
            return
        assert first_error is not None
        raise first_error

    def _prepare(
        self, spec: ModelSpec, candidate: ModelSpec, prepare: Prepare[T]
    ) -> Prepared[T] | None:
        """The call on `candidate`; None if a fallback cannot take the request (the model
        asked for refuses it with its own error)."""
        provider = self._providers[candidate.provider]
        if candidate is spec:
            return prepare(candidate, provider)
        try:
            return prepare(candidate, provider)
        except InvalidRequest as refused:
            logger.info("fallback %s cannot take this request: %s", candidate.id, refused.message)
            return None

    def _log_fallback(self, candidate: ModelSpec, error: BaseException) -> None:
        logger.warning(
            "model %s failed (%s); trying its fallbacks",
            candidate.id,
            getattr(error, "code", type(error).__name__),
        )
