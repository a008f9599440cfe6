"""What the infra tests share: the built app, its stacks and their templates."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import App, CfnElement, Stack
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template
from constructs import IConstruct

from infra.constructs.service_function import TABLE_WRITE_ACTIONS
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


# --- reading the API stack's template -----------------------------------------------------

TABLE_REFERENCE = re.compile(r"Tables([A-Z][a-z]+)Table")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def logical_id(construct: IConstruct) -> str:
    child = construct.node.default_child
    assert isinstance(child, CfnElement)
    return Stack.of(construct).get_logical_id(child)


def resource(stacks: GantryApp, construct: IConstruct) -> dict[str, Any]:
    found: dict[str, Any] = stacks.api_template.to_json()["Resources"][logical_id(construct)]
    return found


def role_statements(stacks: GantryApp, role: iam.IRole) -> list[dict[str, Any]]:
    """Every statement of the policies attached to `role`."""
    role_id = logical_id(role)
    statements: list[dict[str, Any]] = []
    for policy in stacks.api_template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def actions(statements: list[dict[str, Any]], prefix: str = "") -> set[str]:
    return {a for s in statements for a in as_list(s["Action"]) if a.startswith(prefix)}


def table_access(statements: list[dict[str, Any]]) -> dict[str, str]:
    """Table -> "rw" or "read", from the DynamoDB statements."""
    reached: dict[str, str] = {}
    for statement in statements:
        granted = set(as_list(statement["Action"]))
        if not any(a.startswith("dynamodb:") for a in granted):
            continue
        access = "rw" if granted & set(TABLE_WRITE_ACTIONS) else "read"
        for table in TABLE_REFERENCE.findall(json.dumps(statement["Resource"])):
            if reached.get(table.lower()) != "rw":
                reached[table.lower()] = access
    return reached
