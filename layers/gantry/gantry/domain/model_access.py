"""Who may use a model: the public catalogue serves everyone, a fine-tuned model only the
organization that trained it (everyone else gets the same 404 as for an unknown id)."""

from __future__ import annotations

from gantry.domain.errors import NotFound
from gantry.domain.registry import ModelSpec


def visible_to(spec: ModelSpec, org_id: str) -> bool:
    return spec.owner_org is None or spec.owner_org == org_id


def require_visible(spec: ModelSpec, org_id: str) -> None:
    if not visible_to(spec, org_id):
        raise NotFound(
            f"The model '{spec.id}' does not exist. GET /v1/models lists the models available "
            "to you.",
            code="model_not_found",
            param="model",
        )
