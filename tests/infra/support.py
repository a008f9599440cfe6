"""What the infra tests share: the built app, its stacks and their templates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import App
from aws_cdk.assertions import Template

from infra.stacks.api_stack import ApiStack
from infra.stacks.data_stack import DataStack

# Unit tests never bundle the layers (no pip downloads); `make synth` does.
SKIP_BUNDLING: dict[str, Any] = {"aws:cdk:bundling-stacks": []}


@dataclass(frozen=True)
class GantryApp:
    app: App
    data: DataStack
    api: ApiStack
    data_template: Template
    api_template: Template

    def api_resources(self, resource_type: str) -> dict[str, Any]:
        return dict(self.api_template.find_resources(resource_type))

    def data_resources(self, resource_type: str) -> dict[str, Any]:
        return dict(self.data_template.find_resources(resource_type))
