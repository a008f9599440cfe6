"""Least privilege: each function's role reaches only its own tables, the pepper and its logs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gantry.tables import TABLES
from tests.infra.support import GantryApp

# The tables each function family may touch (all read/write: auth updates last_used_at).
EXPECTED_TABLES = {
    "Inference": {"keys", "quotas", "usage", "cache", "idempotency", "jobs"},
    "Models": {"keys", "quotas", "usage", "jobs"},
    "Keys": {"keys", "idempotency"},
    "Conversations": {"keys", "conversations", "idempotency"},
    "Completions": {"keys", "quotas", "usage", "cache", "idempotency", "conversations", "jobs"},
}
# Step Functions log delivery and X-Ray sampling support no resource-level permissions.
STATE_MACHINE_UNSCOPED = {
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
}
_TABLE_REFERENCE = re.compile(r"Tables([A-Z][a-z]+)Table")


def _statements(stacks: GantryApp) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for logical_id, policy in stacks.api_resources("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            found.append((logical_id, statement))
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_statements(stacks: GantryApp, family: str) -> list[dict[str, Any]]:
    role = getattr(stacks.api, family.lower()).role
    role_id = stacks.api.get_logical_id(role.node.default_child)
    statements = []
    for policy in stacks.api_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_no_wildcard_dynamodb_actions(stacks: GantryApp) -> None:
    for logical_id, statement in _statements(stacks):
        for action in _as_list(statement["Action"]):
            assert action not in ("*", "dynamodb:*"), logical_id
            assert not (action.startswith("dynamodb:") and "*" in action), (logical_id, action)


def test_dynamodb_statements_name_their_tables(stacks: GantryApp) -> None:
    for logical_id, statement in _statements(stacks):
        actions = _as_list(statement["Action"])
        if not any(action.startswith("dynamodb:") for action in actions):
            continue
        for resource in _as_list(statement["Resource"]):
            assert resource != "*", logical_id
            assert "*" not in json.dumps(resource), (logical_id, resource)  # no index/*
            assert _TABLE_REFERENCE.search(json.dumps(resource)), (logical_id, resource)


def test_only_xray_is_granted_on_every_resource(stacks: GantryApp) -> None:
    for logical_id, statement in _statements(stacks):
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= {
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                *STATE_MACHINE_UNSCOPED,
            }, logical_id


@pytest.mark.parametrize("family", sorted(EXPECTED_TABLES))
def test_function_reaches_only_its_tables(stacks: GantryApp, family: str) -> None:
    reached: set[str] = set()
    for statement in _role_statements(stacks, family):
        if any(a.startswith("dynamodb:") for a in _as_list(statement["Action"])):
            reached |= {match.lower() for match in _TABLE_REFERENCE.findall(json.dumps(statement))}
    assert reached == EXPECTED_TABLES[family]
    assert reached <= {spec.logical_name for spec in TABLES}


@pytest.mark.parametrize("family", sorted(EXPECTED_TABLES))
def test_function_role_scope(stacks: GantryApp, family: str) -> None:
    statements = _role_statements(stacks, family)
    actions = {action for s in statements for action in _as_list(s["Action"])}
    assert {"secretsmanager:GetSecretValue", "logs:PutLogEvents"} <= actions
    assert "dynamodb:Scan" not in actions
    assert not {a for a in actions if a.startswith(("iam:", "kms:"))}
    # Functions that serve fine-tuned models read their trained artifacts, nothing else.
    assert {a for a in actions if a.startswith("s3:")} <= {"s3:GetObject"}

    secret_statements = [s for s in statements if "secretsmanager:GetSecretValue" in s["Action"]]
    assert all("KeyPepperSecret" in json.dumps(s["Resource"]) for s in secret_statements)

    # Indexes are granted by name, only for tables that have them.
    for statement in statements:
        for resource in _as_list(statement["Resource"]):
            text = json.dumps(resource)
            if "/index/" in text:
                assert "/index/by_org" in text


def test_function_roles_have_no_managed_policies(stacks: GantryApp) -> None:
    for family in EXPECTED_TABLES:
        role = getattr(stacks.api, family.lower()).role
        role_id = stacks.api.get_logical_id(role.node.default_child)
        props = stacks.api_resources("AWS::IAM::Role")[role_id]["Properties"]
        assert "ManagedPolicyArns" not in props
        assert props["AssumeRolePolicyDocument"]["Statement"] == [
            {
                "Action": "sts:AssumeRole",
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
            }
        ]
