"""Fine-tuning Amazon Bedrock base models: Bedrock trains them itself (the state machine's
`CreateModelCustomizationJob` branch), so the workers only validate their training files,
which must be prompt/completion JSONL (Bedrock's format for text models)."""

from __future__ import annotations

from collections.abc import Sequence

from gantry.domain.errors import InvalidRequest
from gantry.domain.files import Example
from gantry.domain.registry import ModelSpec
from gantry.job_ports import Progress, TrainedModel

BEDROCK = "bedrock"


class BedrockCustomization:
    def example_formats(self, base: ModelSpec) -> tuple[str, ...]:
        return ("completion",) if base.provider == BEDROCK else ()

    def train(
        self,
        base: ModelSpec,
        examples: Sequence[Example],
        n_epochs: int,
        learning_rate_multiplier: float,
        progress: Progress,
        first_epoch: int = 1,
    ) -> TrainedModel | None:
        raise InvalidRequest(
            f"The model '{base.id}' is trained by Bedrock itself, not by Gantry's workers.",
            code="model_not_supported",
            param="model",
        )

    def evaluate(
        self, base: ModelSpec, artifact: bytes, held_out: Sequence[Example]
    ) -> dict[str, float]:
        raise InvalidRequest(
            f"The model '{base.id}' is evaluated by Bedrock, which reports its own metrics.",
            code="model_not_supported",
            param="model",
        )

    def install(self, provider_model_id: str, base: ModelSpec, artifact: bytes) -> None:
        return None  # Bedrock serves a custom model by its ARN (`provider_model_id`)
