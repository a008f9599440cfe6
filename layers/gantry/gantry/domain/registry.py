"""The model registry: which public model ids exist, what they cost and what they can do."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from gantry.domain.errors import InvalidRequest, NotFound
from gantry.domain.model_policy import ModelPolicy, provider_options

CAPABILITIES = frozenset(
    {
        "chat",
        "completions",
        "embeddings",
        "classifications",
        "moderations",
        "logprobs",
        "seed",
        "logit_bias",
        "json_mode",
        "tools",
        "vision",
        "audio",
        "reasoning",
        "web_search",
        "predicted_outputs",
        "insert",
        "token_input",
        "prompt_logprobs",
    }
)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    provider: str
    provider_model_id: str
    version: str
    context_window: int
    max_output_tokens: int
    input_price_per_million: float
    output_price_per_million: float
    capabilities: frozenset[str]
    owned_by: str = "gantry"
    created: int = 0
    tokenizer: str = "unknown"
    embedding_dimensions: int | None = None
    deprecation_date: date | None = None
    sunset_date: date | None = None
    replacement: str | None = None
    description: str = ""
    # Prices of a response served from the cache (zero unless the registry says otherwise).
    cached_input_price_per_million: float = 0.0
    cached_output_price_per_million: float = 0.0
    # The share of the price a batch request does not pay (0.5: batches cost half).
    batch_discount: float = 0.0
    # Serving policy (fallbacks, hedging, timeouts) and adapter settings from the registry.
    policy: ModelPolicy = field(default_factory=ModelPolicy)
    provider_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # A fine-tuned model belongs to one organization; None for the public catalogue.
    owner_org: str | None = None

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        cost = (
            prompt_tokens * self.input_price_per_million
            + completion_tokens * self.output_price_per_million
        ) / 1_000_000
        return round(cost, 10)

    def cached_cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        cost = (
            prompt_tokens * self.cached_input_price_per_million
            + completion_tokens * self.cached_output_price_per_million
        ) / 1_000_000
        return round(cost, 10)

    @classmethod
    def named(cls, model_id: str) -> ModelSpec:
        """A spec known only by its id: what a usage record needs once its request ended."""
        return cls(model_id, "", model_id, "", 0, 0, 0.0, 0.0, frozenset())

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelSpec:
        caps = frozenset(raw["capabilities"])
        unknown = caps - CAPABILITIES
        if unknown:
            raise ValueError(f"model {raw['id']}: unknown capabilities {sorted(unknown)}")
        pricing = raw.get("pricing", {})
        return cls(
            id=raw["id"],
            provider=raw["provider"],
            provider_model_id=raw.get("provider_model_id", raw["id"]),
            version=raw["version"],
            context_window=int(raw["context_window"]),
            max_output_tokens=int(raw["max_output_tokens"]),
            input_price_per_million=float(pricing.get("input_per_million", 0.0)),
            output_price_per_million=float(pricing.get("output_per_million", 0.0)),
            capabilities=caps,
            owned_by=raw.get("owned_by", "gantry"),
            created=int(raw.get("created", 0)),
            tokenizer=raw.get("tokenizer", "unknown"),
            embedding_dimensions=raw.get("embedding_dimensions"),
            deprecation_date=_date(raw.get("deprecation_date")),
            sunset_date=_date(raw.get("sunset_date")),
            replacement=raw.get("replacement"),
            description=raw.get("description", ""),
            cached_input_price_per_million=float(pricing.get("cached_input_per_million", 0.0)),
            cached_output_price_per_million=float(pricing.get("cached_output_per_million", 0.0)),
            batch_discount=_discount(raw["id"], pricing.get("batch_discount", 0.0)),
            policy=ModelPolicy.from_dict(raw),
            provider_options=provider_options(raw),
        )


def _discount(model_id: str, value: Any) -> float:
    discount = float(value)
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"model {model_id}: pricing.batch_discount must be from 0 to 1")
    return discount


def _date(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


class Registry:
    def __init__(self, models: Iterable[ModelSpec]) -> None:
        self._models = {m.id: m for m in models}
        # Resolves ids the catalogue does not list (fine-tuned models), then remembered.
        self.loader: Callable[[str], ModelSpec | None] | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Registry:
        return cls(ModelSpec.from_dict(m) for m in raw["models"])

    def register(self, spec: ModelSpec) -> None:
        """Serve one more model id (a fine-tuned model, a test model) from now on."""
        self._models[spec.id] = spec

    def all(self) -> list[ModelSpec]:
        return sorted(self._models.values(), key=lambda m: m.id)

    def find(self, model_id: str) -> ModelSpec | None:
        spec = self._models.get(model_id)
        if spec is None and self.loader is not None and model_id.startswith("ft:"):
            spec = self.loader(model_id)
            if spec is not None:
                self.register(spec)
        return spec

    def get(self, model_id: str) -> ModelSpec:
        spec = self.find(model_id)
        if spec is None:
            raise NotFound(
                f"The model '{model_id}' does not exist. GET /v1/models lists the models "
                "available to you.",
                code="model_not_found",
                param="model",
            )
        return spec

    def for_capability(self, model_id: str, capability: str) -> ModelSpec:
        """The model, or a 400 if it exists but cannot serve this kind of request."""
        spec = self.get(model_id)
        if not spec.supports(capability):
            able = [m.id for m in self.all() if m.supports(capability) and not m.owner_org]
            raise InvalidRequest(
                f"The model '{model_id}' does not support {capability}. "
                f"Models that do: {', '.join(able) or 'none'}.",
                code="model_not_supported",
                param="model",
            )
        return spec
