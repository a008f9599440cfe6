"""Model providers in the stacks: nested timeouts, and Bedrock / OpenAI-compatible access
granted only to the model-calling functions, only for what the operator names."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from infra.app import build_app
from infra.constructs.model_access import request_budget_seconds
from tests.infra.support import SKIP_BUNDLING, GantryApp

MODEL_CALLERS = ("inference", "completions")
API_GATEWAY_TIMEOUT = 29


def _function(api: Any, template: Template, family: str) -> dict[str, Any]:
    function = getattr(api, family).function
    logical_id = api.get_logical_id(function.node.default_child)
    resources = template.find_resources("AWS::Lambda::Function")
    return dict(resources[logical_id]["Properties"])


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        actions = statement["Action"]
        found |= set(actions if isinstance(actions, list) else [actions])
    return found


def _role_statements(api: Any, template: Template, family: str) -> list[dict[str, Any]]:
    role = getattr(api, family).role
    role_id = api.get_logical_id(role.node.default_child)
    statements: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


@pytest.mark.parametrize("family", MODEL_CALLERS)
def test_timeouts_nest_inside_the_function(stacks: GantryApp, family: str) -> None:
    props = _function(stacks.api, stacks.api_template, family)
    budget = int(props["Environment"]["Variables"]["GANTRY_REQUEST_TIMEOUT_SECONDS"])
    assert 0 < budget < props["Timeout"]
    if family == "inference":
        assert props["Timeout"] <= API_GATEWAY_TIMEOUT  # buffered: inside the gateway's limit


def test_request_budget_leaves_a_margin() -> None:
    assert request_budget_seconds(29) == 25
    assert request_budget_seconds(900) == 855


def test_no_model_access_unless_configured(stacks: GantryApp) -> None:
    resources = stacks.api_template.to_json()["Resources"]
    # The fine-tuning workflow may customize Bedrock models: that is not model access.
    template = json.dumps(
        {k: v for k, v in resources.items() if not k.startswith("JobsFineTuning")}
    )
    assert "bedrock:" not in template
    assert "GANTRY_OPENAI_BASE_URL" not in template


@pytest.fixture(scope="module")
def configured() -> tuple[Any, Template]:
    context = {
        **SKIP_BUNDLING,
        "gantry:bedrockModelIds": ["meta.llama3-1-8b-instruct-v1:0", "us.anthropic.claude-x-v1:0"],
        "gantry:bedrockGuardrailIds": ["gr123"],
        "gantry:openaiBaseUrl": "http://vllm.internal:8000/v1",
        "gantry:openaiApiKeySecretArn": (
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:openai-key-AbCdEf"
        ),
    }
    app, _, api = build_app(context, nag=True)
    report = AwsSolutionsChecks(app).validate_scope(app)
    assert report.success, [v.rule_name for v in report.violations]
    return api, Template.from_stack(api)


@pytest.mark.parametrize("family", MODEL_CALLERS)
def test_model_callers_get_exactly_the_named_models(
    configured: tuple[Any, Template], family: str
) -> None:
    api, template = configured
    statements = _role_statements(api, template, family)
    invoke = [s for s in statements if "bedrock:InvokeModel" in s["Action"]]
    assert len(invoke) == 1
    assert set(invoke[0]["Action"]) == {
        "bedrock:InvokeModel",
        "bedrock:InvokeModelWithResponseStream",
    }
    resources = json.dumps(invoke[0]["Resource"])
    assert "foundation-model/meta.llama3-1-8b-instruct-v1:0" in resources
    assert "inference-profile/us.anthropic.claude-x-v1:0" in resources
    assert "foundation-model/anthropic.claude-x-v1:0" in resources
    guardrail = [s for s in statements if s["Action"] == "bedrock:ApplyGuardrail"]
    assert "guardrail/gr123" in json.dumps(guardrail[0]["Resource"])
    assert "secretsmanager:GetSecretValue" in _actions(statements)
    variables = _function(api, template, family)["Environment"]["Variables"]
    assert variables["GANTRY_OPENAI_BASE_URL"] == "http://vllm.internal:8000/v1"
    assert "openai-key" in json.dumps(variables["GANTRY_OPENAI_API_KEY_SECRET_ARN"])


def test_the_batch_worker_reaches_the_models_completions_reach(
    configured: tuple[Any, Template],
) -> None:
    """Batch lines run through the API app in the worker, with the same model access."""
    api, template = configured
    worker, completions = api.batches.worker, api.completions

    def model_statements(service: Any) -> list[dict[str, Any]]:
        role_id = api.get_logical_id(service.role.node.default_child)
        return [
            statement
            for policy in template.find_resources("AWS::IAM::Policy").values()
            if {"Ref": role_id} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if "bedrock:" in json.dumps(statement["Action"])
        ]

    assert model_statements(worker) == model_statements(completions) != []
    worker_id = api.get_logical_id(worker.function.node.default_child)
    worker_props = template.find_resources("AWS::Lambda::Function")[worker_id]["Properties"]
    worker_env = worker_props["Environment"]["Variables"]
    completions_env = _function(api, template, "completions")["Environment"]["Variables"]
    for name in ("GANTRY_OPENAI_BASE_URL", "GANTRY_OPENAI_API_KEY_SECRET_ARN"):
        assert worker_env[name] == completions_env[name]


@pytest.mark.parametrize("family", ["keys", "models", "usage"])
def test_other_functions_reach_no_model(configured: tuple[Any, Template], family: str) -> None:
    api, template = configured
    assert not {a for a in _actions(_role_statements(api, template, family)) if "bedrock" in a}
