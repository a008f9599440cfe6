"""API stack: layers, functions, REST API routes, stage settings and error envelopes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk import CfnResource

from gantry.tables import TABLES
from tests.infra.support import GantryApp

COMPLETIONS = "Completions"
INFERENCE = "Inference"
KEYS = "Keys"
MODELS = "Models"
USAGE = "Usage"
CONVERSATIONS = "Conversations"
FILES = "Files"
FINE_TUNING = "FineTuning"
WEBHOOKS = "Webhooks"
BATCHES = "Batches"
BUFFERED = (INFERENCE, KEYS, MODELS, USAGE, CONVERSATIONS, FINE_TUNING, WEBHOOKS, BATCHES)
# Behind the Lambda Web Adapter: completions (SSE) and files (downloads of any size).
STREAMED = (COMPLETIONS, FILES)
# Functions without routes: the queue workers (training, webhooks, batches, settlements).
WORKERS = 4
EXPECTED_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/chat/completions"): COMPLETIONS,
    ("POST", "/v1/completions"): COMPLETIONS,
    ("POST", "/v2/chat/completions"): COMPLETIONS,
    ("POST", "/v1/embeddings"): INFERENCE,
    ("POST", "/v1/classifications"): INFERENCE,
    ("POST", "/v1/moderations"): INFERENCE,
    ("GET", "/v1/models"): MODELS,
    ("GET", "/v1/models/{id}"): MODELS,
    ("GET", "/health"): MODELS,
    ("GET", "/docs"): MODELS,
    ("GET", "/docs/errors"): MODELS,
    ("GET", "/docs/versioning"): MODELS,
    ("GET", "/openapi.json"): MODELS,
    ("GET", "/v1/keys"): KEYS,
    ("POST", "/v1/keys"): KEYS,
    ("GET", "/v1/keys/{id}"): KEYS,
    ("PATCH", "/v1/keys/{id}"): KEYS,
    ("DELETE", "/v1/keys/{id}"): KEYS,
    ("POST", "/v1/keys/{id}/rotate"): KEYS,
    ("GET", "/v1/usage"): USAGE,
    ("POST", "/v1/conversations"): CONVERSATIONS,
    ("GET", "/v1/conversations/{id}"): CONVERSATIONS,
    ("DELETE", "/v1/conversations/{id}"): CONVERSATIONS,
    ("GET", "/v1/conversations/{id}/messages"): CONVERSATIONS,
    ("POST", "/v1/conversations/{id}/messages"): COMPLETIONS,
    ("POST", "/v1/files"): FILES,
    ("GET", "/v1/files"): FILES,
    ("GET", "/v1/files/{id}"): FILES,
    ("DELETE", "/v1/files/{id}"): FILES,
    ("GET", "/v1/files/{id}/content"): FILES,
    ("POST", "/v1/fine_tuning/jobs"): FINE_TUNING,
    ("GET", "/v1/fine_tuning/jobs"): FINE_TUNING,
    ("GET", "/v1/fine_tuning/jobs/{id}"): FINE_TUNING,
    ("GET", "/v1/fine_tuning/jobs/{id}/events"): FINE_TUNING,
    ("POST", "/v1/fine_tuning/jobs/{id}/cancel"): FINE_TUNING,
    ("GET", "/v1/fine_tuning/jobs/{id}/results"): FINE_TUNING,
    ("POST", "/v1/fine-tuning-jobs"): FINE_TUNING,
    ("GET", "/v1/fine-tuning-jobs"): FINE_TUNING,
    ("GET", "/v1/fine-tuning-jobs/{id}"): FINE_TUNING,
    ("GET", "/v1/fine-tuning-jobs/{id}/events"): FINE_TUNING,
    ("POST", "/v1/fine-tuning-jobs/{id}/cancel"): FINE_TUNING,
    ("GET", "/v1/fine-tuning-jobs/{id}/results"): FINE_TUNING,
    ("POST", "/v1/webhooks"): WEBHOOKS,
    ("GET", "/v1/webhooks"): WEBHOOKS,
    ("DELETE", "/v1/webhooks/{id}"): WEBHOOKS,
    ("POST", "/v1/webhooks/{id}/test"): WEBHOOKS,
    ("GET", "/v1/webhooks/{id}/deliveries"): WEBHOOKS,
    ("POST", "/v1/batches"): BATCHES,
    ("GET", "/v1/batches"): BATCHES,
    ("GET", "/v1/batches/{id}"): BATCHES,
    ("POST", "/v1/batches/{id}/cancel"): BATCHES,
}
ENVELOPE_FIELDS = {
    "message",
    "type",
    "param",
    "code",
    "request_id",
    "retryable",
    "doc_url",
    "details",
}


def _logical_id(stacks: GantryApp, construct: Any) -> str:
    default_child = construct.node.default_child
    assert isinstance(default_child, CfnResource)
    return stacks.api.get_logical_id(default_child)


def _function_ids(stacks: GantryApp) -> dict[str, str]:
    """Function family -> logical id of its AWS::Lambda::Function."""
    return {
        COMPLETIONS: _logical_id(stacks, stacks.api.completions.function),
        INFERENCE: _logical_id(stacks, stacks.api.inference.function),
        KEYS: _logical_id(stacks, stacks.api.keys.function),
        MODELS: _logical_id(stacks, stacks.api.models.function),
        USAGE: _logical_id(stacks, stacks.api.usage.function),
        CONVERSATIONS: _logical_id(stacks, stacks.api.conversations.function),
        FILES: _logical_id(stacks, stacks.api.jobs.files.function),
        FINE_TUNING: _logical_id(stacks, stacks.api.jobs.fine_tuning.function),
        WEBHOOKS: _logical_id(stacks, stacks.api.jobs.webhooks.function),
        BATCHES: _logical_id(stacks, stacks.api.batches.api_function.function),
    }


def _resource_paths(stacks: GantryApp) -> dict[str, str]:
    """Logical id of each AWS::ApiGateway::Resource -> its full path, rebuilt from the template."""
    resources = stacks.api_resources("AWS::ApiGateway::Resource")
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            prefix = "" if "Fn::GetAtt" in parent else path_of(parent["Ref"])
            paths[logical_id] = f"{prefix}/{props['PathPart']}"
        return paths[logical_id]

    for logical_id in resources:
        path_of(logical_id)
    return paths


def _routes(stacks: GantryApp) -> dict[tuple[str, str], dict[str, Any]]:
    paths = _resource_paths(stacks)
    routes: dict[tuple[str, str], dict[str, Any]] = {}
    for method in stacks.api_resources("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        resource_id = props["ResourceId"]
        path = "/" if "Fn::GetAtt" in resource_id else paths[resource_id["Ref"]]
        routes[(props["HttpMethod"], path)] = props
    return routes


# Layers


def test_two_layers_for_python312_arm64(stacks: GantryApp) -> None:
    layers = stacks.api_resources("AWS::Lambda::LayerVersion")
    assert len(layers) == 2
    for layer in layers.values():
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


# Functions


@pytest.mark.parametrize("family", sorted(set(EXPECTED_ROUTES.values())))
def test_function_defaults(stacks: GantryApp, family: str) -> None:
    function_id = _function_ids(stacks)[family]
    props = stacks.api_resources("AWS::Lambda::Function")[function_id]["Properties"]

    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    assert props["MemorySize"] == 1024
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert "LogGroup" in props["LoggingConfig"]
    if family not in STREAMED:
        assert props["Handler"] == "handler.handler"
        assert props["Timeout"] == 29

    layer_ids = {
        _logical_id(stacks, stacks.api.layers.dependencies),
        _logical_id(stacks, stacks.api.layers.shared_code),
    }
    assert {layer["Ref"] for layer in props["Layers"] if "Ref" in layer} == layer_ids

    env = props["Environment"]["Variables"]
    assert env["GANTRY_ENV"] == "aws"
    assert env["POWERTOOLS_SERVICE_NAME"] == "gantry"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Gantry"
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert "KeyPepperSecret" in json.dumps(env["GANTRY_KEY_PEPPER_SECRET_ARN"])
    for spec in TABLES:
        assert spec.env_var in env, spec.env_var
        # A reference to that table's name in the data stack, never a literal.
        assert isinstance(env[spec.env_var], dict)
        table_construct = f"Tables{spec.logical_name.capitalize()}Table"
        assert table_construct in json.dumps(env[spec.env_var])


def test_each_function_has_its_own_role(stacks: GantryApp) -> None:
    functions = stacks.api_resources("AWS::Lambda::Function")
    roles = {json.dumps(fn["Properties"]["Role"]) for fn in functions.values()}
    assert len(roles) == len(functions) == len(set(EXPECTED_ROUTES.values())) + WORKERS


# REST API


def test_rest_api_is_regional_with_prod_stage(stacks: GantryApp) -> None:
    (api,) = stacks.api_resources("AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["EndpointConfiguration"] == {"Types": ["REGIONAL"]}

    (stage,) = stacks.api_resources("AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "prod"
    assert props["TracingEnabled"] is True
    access_log = props["AccessLogSetting"]
    assert "DestinationArn" in access_log
    assert "$context.requestId" in access_log["Format"]
    assert "header" not in access_log["Format"].lower()  # API keys travel in headers
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0
    assert settings["ThrottlingBurstLimit"] > 0
    assert settings["DataTraceEnabled"] is False
    assert settings["LoggingLevel"] == "ERROR"


def test_exactly_the_expected_routes(stacks: GantryApp) -> None:
    assert set(_routes(stacks)) == set(EXPECTED_ROUTES)


@pytest.mark.parametrize(
    ("route", "family"), EXPECTED_ROUTES.items(), ids=[f"{m} {p}" for m, p in EXPECTED_ROUTES]
)
def test_route_proxies_to_its_function(
    stacks: GantryApp, route: tuple[str, str], family: str
) -> None:
    props = _routes(stacks)[route]
    integration = props["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    assert integration["IntegrationHttpMethod"] == "POST"
    uri = json.dumps(integration["Uri"])
    function_ids = _function_ids(stacks)
    assert function_ids[family] in uri
    assert all(other not in uri for name, other in function_ids.items() if name != family)
    assert props["AuthorizationType"] == "NONE"  # the function verifies the API key
    assert "RequestValidatorId" in props
    for name in re.findall(r"\{(\w+)\}", route[1]):
        assert props["RequestParameters"] == {f"method.request.path.{name}": True}


def test_functions_may_be_invoked_by_their_routes_only(stacks: GantryApp) -> None:
    permissions = [
        p
        for p in stacks.api_resources("AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] != "events.amazonaws.com"  # the webhook relay schedule
    ]
    assert len(permissions) == len(EXPECTED_ROUTES)
    for permission in permissions:
        props = permission["Properties"]
        assert props["Principal"] == "apigateway.amazonaws.com"
        assert "SourceArn" in props


# Gateway responses: API Gateway's own errors use Gantry's error envelope


def _gateway_responses(stacks: GantryApp) -> dict[str, dict[str, Any]]:
    return {
        response["Properties"]["ResponseType"]: response["Properties"]
        for response in stacks.api_resources("AWS::ApiGateway::GatewayResponse").values()
    }


def _render(template: str) -> dict[str, Any]:
    """Substitute API Gateway's $context variables the way it does, then parse."""
    rendered = template.replace("$context.error.messageString", '"Some gateway message"')
    rendered = rendered.replace("$context.requestId", "req-123")
    body: dict[str, Any] = json.loads(rendered)
    return body


def test_gateway_responses_exist(stacks: GantryApp) -> None:
    assert {"DEFAULT_4XX", "DEFAULT_5XX", "MISSING_AUTHENTICATION_TOKEN"} <= set(
        _gateway_responses(stacks)
    )


@pytest.mark.parametrize(
    "response_type",
    [
        "DEFAULT_4XX",
        "DEFAULT_5XX",
        "MISSING_AUTHENTICATION_TOKEN",
        "RESOURCE_NOT_FOUND",
        "THROTTLED",
        "REQUEST_TOO_LARGE",
        "UNSUPPORTED_MEDIA_TYPE",
        "INTEGRATION_TIMEOUT",
    ],
)
def test_gateway_response_uses_error_envelope(stacks: GantryApp, response_type: str) -> None:
    props = _gateway_responses(stacks)[response_type]
    body = _render(props["ResponseTemplates"]["application/json"])
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_FIELDS
    assert error["request_id"] == "req-123"
    assert error["param"] is None
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["retryable"], bool)


def test_unknown_route_is_a_404_not_found(stacks: GantryApp) -> None:
    props = _gateway_responses(stacks)["MISSING_AUTHENTICATION_TOKEN"]
    assert props["StatusCode"] == "404"
    error = _render(props["ResponseTemplates"]["application/json"])["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "not_found"
    assert "Authentication" not in error["message"]


def test_default_responses_keep_status_and_use_gateway_message(stacks: GantryApp) -> None:
    responses = _gateway_responses(stacks)
    for response_type, code in (
        ("DEFAULT_4XX", "invalid_request"),
        ("DEFAULT_5XX", "internal_error"),
    ):
        props = responses[response_type]
        assert "StatusCode" not in props
        template = props["ResponseTemplates"]["application/json"]
        assert "$context.error.messageString" in template
        assert _render(template)["error"]["code"] == code


def test_throttled_response_says_when_to_retry(stacks: GantryApp) -> None:
    props = _gateway_responses(stacks)["THROTTLED"]
    assert props["ResponseParameters"] == {"gatewayresponse.header.Retry-After": "'1'"}
    error = _render(props["ResponseTemplates"]["application/json"])["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["retryable"] is True


def test_api_url_outputs(stacks: GantryApp) -> None:
    outputs = stacks.api_template.find_outputs("*")
    assert {"ApiUrl", "OpenAIBaseUrl"} <= set(outputs)
    assert "execute-api" in json.dumps(outputs["ApiUrl"]["Value"])


def test_the_api_routes_exactly_the_app_routes() -> None:
    """API Gateway and the FastAPI app agree on every (method, path), so no route is
    unreachable in AWS and none reaches a function that cannot serve it."""
    import re

    from gantry.http.app import api_routes

    served = set()
    for route in api_routes():
        for method in route.methods:
            served.add((method, re.sub(r"\{[^}]+\}", "{id}", route.path)))
    served |= {("GET", "/docs"), ("GET", "/openapi.json")}
    assert served == set(EXPECTED_ROUTES)


# Streaming


@pytest.mark.parametrize("family", STREAMED)
def test_streaming_functions_run_behind_the_web_adapter(stacks: GantryApp, family: str) -> None:
    function_id = _function_ids(stacks)[family]
    props = stacks.api_resources("AWS::Lambda::Function")[function_id]["Properties"]
    assert props["Handler"] == "run.sh"
    assert props["Timeout"] == 900
    env = props["Environment"]["Variables"]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/health"
    assert env["AWS_LWA_PORT"] == env["PORT"] == "8080"
    assert env["PYTHONUNBUFFERED"] == "1"  # metrics and logs reach the log stream at once
    adapter = [layer for layer in props["Layers"] if "Ref" not in layer]
    assert "LambdaAdapterLayerArm64" in json.dumps(adapter)


@pytest.mark.parametrize("route", [r for r, f in EXPECTED_ROUTES.items() if f in STREAMED])
def test_streaming_functions_routes_stream(stacks: GantryApp, route: tuple[str, str]) -> None:
    integration = _routes(stacks)[route]["Integration"]
    assert integration["ResponseTransferMode"] == "STREAM"
    assert integration["TimeoutInMillis"] == 900_000
    assert "response-streaming-invocations" in json.dumps(integration["Uri"])


@pytest.mark.parametrize("route", [r for r, f in EXPECTED_ROUTES.items() if f in BUFFERED])
def test_other_routes_are_buffered(stacks: GantryApp, route: tuple[str, str]) -> None:
    integration = _routes(stacks)[route]["Integration"]
    assert integration.get("ResponseTransferMode", "BUFFERED") == "BUFFERED"
    assert "response-streaming-invocations" not in json.dumps(integration["Uri"])


# Compression


def test_gateway_compresses_at_the_apps_threshold(stacks: GantryApp) -> None:
    """API Gateway compresses buffered responses from the same size the app compresses the
    streaming function's buffered responses (API Gateway encodes nothing in STREAM mode)."""
    from gantry.http.compression import MIN_COMPRESS_BYTES
    from infra.constants import API_MIN_COMPRESSION_BYTES

    (api,) = stacks.api_resources("AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["MinimumCompressionSize"] == MIN_COMPRESS_BYTES
    assert API_MIN_COMPRESSION_BYTES == MIN_COMPRESS_BYTES
