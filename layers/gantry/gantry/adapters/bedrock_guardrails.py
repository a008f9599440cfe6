"""ApplyGuardrail: a Bedrock guardrail's assessment as an OpenAI moderation verdict.

Content filters map onto OpenAI's categories (HATE -> hate, INSULTS -> harassment,
SEXUAL -> sexual, VIOLENCE -> violence, MISCONDUCT -> illicit); their confidence becomes the
score (NONE 0, LOW 0.35, MEDIUM 0.65, HIGH 0.9). A category is flagged when its filter
blocked; the input is flagged whenever the guardrail intervened (denied topics, word lists,
sensitive information and prompt attacks flag it without a category). The guardrail is the
model's `provider_options.guardrail` (`{"id": ..., "version": ...}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gantry.adapters.bedrock_converse import invalid_response
from gantry.adapters.local.moderation import CATEGORIES
from gantry.domain.errors import InvalidRequest
from gantry.domain.registry import ModelSpec
from gantry.ports import ModerationVerdict

FILTER_CATEGORIES = {
    "HATE": "hate",
    "INSULTS": "harassment",
    "SEXUAL": "sexual",
    "VIOLENCE": "violence",
    "MISCONDUCT": "illicit",
}
CONFIDENCE = {"NONE": 0.0, "LOW": 0.35, "MEDIUM": 0.65, "HIGH": 0.9}
INTERVENED = "GUARDRAIL_INTERVENED"


def guardrail_request(spec: ModelSpec, text: str, source: str = "INPUT") -> dict[str, Any]:
    guardrail = spec.provider_options.get("guardrail")
    if not isinstance(guardrail, Mapping) or not guardrail.get("id"):
        raise InvalidRequest(
            f"The model '{spec.id}' has no guardrail configured.",
            code="model_not_available",
            param="model",
        )
    return {
        "guardrailIdentifier": str(guardrail["id"]),
        "guardrailVersion": str(guardrail.get("version", "DRAFT")),
        "source": source,
        "content": [{"text": {"text": text}}],
    }


def intervened(response: Mapping[str, Any]) -> bool:
    return response.get("action") == INTERVENED


def verdict(spec: ModelSpec, response: Mapping[str, Any]) -> ModerationVerdict:
    if "action" not in response or not isinstance(response.get("assessments"), list):
        raise invalid_response(spec, "no guardrail assessment")
    scores = dict.fromkeys(CATEGORIES, 0.0)
    flags = dict.fromkeys(CATEGORIES, False)
    for assessment in response["assessments"]:
        policy = assessment.get("contentPolicy") if isinstance(assessment, Mapping) else None
        filters = policy.get("filters") if isinstance(policy, Mapping) else None
        for item in filters or ():
            category = FILTER_CATEGORIES.get(str(item.get("type")))
            if category is None:
                continue
            score = CONFIDENCE.get(str(item.get("confidence")), 0.0)
            scores[category] = max(scores[category], score)
            flags[category] = flags[category] or item.get("action") == "BLOCKED"
    return ModerationVerdict(flagged=intervened(response), categories=flags, category_scores=scores)
