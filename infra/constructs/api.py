"""The public REST API: a regional API Gateway whose routes proxy to Gantry functions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Size
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constants import (
    API_ACCESS_LOG_RETENTION,
    API_MIN_COMPRESSION_BYTES,
    API_NAME,
    API_STAGE_NAME,
    API_THROTTLE_BURST_LIMIT,
    API_THROTTLE_RATE_LIMIT,
    STREAMING_TIMEOUT_SECONDS,
)
from infra.nag import acknowledge

_PATH_PARAMETER = re.compile(r"\{([A-Za-z0-9_]+)\+?\}")

# One JSON line per request. Never add headers here: the Authorization header holds the key.
ACCESS_LOG_FIELDS: dict[str, str] = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTimeEpoch",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "path": "$context.path",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationStatus": "$context.integration.status",
    "errorType": "$context.error.responseType",
    "errorMessage": "$context.error.message",
    "xrayTraceId": "$context.xrayTraceId",
}


@dataclass(frozen=True)
class GatewayError:
    """How API Gateway's own errors (no function involved) are rendered in Gantry's envelope."""

    response_type: apigw.ResponseType
    type: str
    code: str
    retryable: bool = False
    status_code: str | None = None  # None keeps API Gateway's status
    message: str | None = None  # None uses $context.error.messageString
    headers: tuple[tuple[str, str], ...] = ()

    def template(self) -> str:
        message = json.dumps(self.message) if self.message else "$context.error.messageString"
        return (
            '{"error": {'
            f'"message": {message}, '
            f'"type": "{self.type}", '
            '"param": null, '
            f'"code": "{self.code}", '
            '"request_id": "$context.requestId", '
            f'"retryable": {json.dumps(self.retryable)}, '
            '"doc_url": null, '
            '"details": null'
            "}}"
        )


NOT_FOUND_MESSAGE = "Unknown route: no such path, or the path does not accept this method."

GATEWAY_ERRORS: tuple[GatewayError, ...] = (
    GatewayError(apigw.ResponseType.DEFAULT_4_XX, "invalid_request_error", "invalid_request"),
    GatewayError(apigw.ResponseType.DEFAULT_5_XX, "server_error", "internal_error"),
    # API Gateway answers an unknown path or method with MISSING_AUTHENTICATION_TOKEN (403).
    GatewayError(
        apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN,
        "invalid_request_error",
        "not_found",
        status_code="404",
        message=NOT_FOUND_MESSAGE,
    ),
    GatewayError(
        apigw.ResponseType.RESOURCE_NOT_FOUND,
        "invalid_request_error",
        "not_found",
        status_code="404",
        message=NOT_FOUND_MESSAGE,
    ),
    GatewayError(
        apigw.ResponseType.THROTTLED,
        "rate_limit_error",
        "rate_limit_exceeded",
        retryable=True,
        headers=(("Retry-After", "'1'"),),
    ),
    GatewayError(
        apigw.ResponseType.REQUEST_TOO_LARGE, "invalid_request_error", "payload_too_large"
    ),
    GatewayError(
        apigw.ResponseType.UNSUPPORTED_MEDIA_TYPE,
        "invalid_request_error",
        "unsupported_media_type",
    ),
    GatewayError(
        apigw.ResponseType.INTEGRATION_TIMEOUT, "server_error", "gateway_timeout", retryable=True
    ),
)


def path_parameters(path: str) -> dict[str, bool]:
    """`/v1/models/{id}` -> {"method.request.path.id": True} (required path parameters)."""
    return {f"method.request.path.{name}": True for name in _PATH_PARAMETER.findall(path)}


class GantryApi(Construct):
    """Regional REST API, stage `prod`, with access logs, tracing, throttling and error envelopes.

    API keys are HMAC-verified by the functions themselves, so methods use no API Gateway
    authorizer.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=API_ACCESS_LOG_RETENTION,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=API_NAME,
            description="Gantry: OpenAI-compatible AI API",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # Streaming routes (STREAM mode) get no gateway encoding: the app compresses those.
            min_compression_size=Size.bytes(API_MIN_COMPRESSION_BYTES),
            # Access and execution logging need the account-level API Gateway logging role.
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE_NAME,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # would log request bodies and headers (API keys)
                throttling_rate_limit=API_THROTTLE_RATE_LIMIT,
                throttling_burst_limit=API_THROTTLE_BURST_LIMIT,
            ),
        )
        # The stacks publish the URL under their own output name.
        self.rest_api.node.try_remove_child("Endpoint")
        self.request_validator = self.rest_api.add_request_validator(
            "RequestValidator",
            request_validator_name="gantry-parameters-and-body",
            validate_request_parameters=True,
            validate_request_body=True,
        )
        for error in GATEWAY_ERRORS:
            self.rest_api.add_gateway_response(
                f"{error.response_type.response_type}Response",
                type=error.response_type,
                status_code=error.status_code,
                response_headers=dict(error.headers) or None,
                templates={"application/json": error.template()},
            )
        self._acknowledge_findings()

    @property
    def url(self) -> str:
        return self.rest_api.url

    def add_route(
        self, method: str, path: str, function: lambda_.IFunction, *, streaming: bool = False
    ) -> apigw.Method:
        """Proxy `method path` to `function` (Lambda proxy integration); a streaming route
        relays the response as the function writes it, for up to 15 minutes."""
        resource = self.rest_api.root.resource_for_path(path)
        options: dict[str, Any] = {}
        if streaming:
            options = {
                "response_transfer_mode": apigw.ResponseTransferMode.STREAM,
                "timeout": Duration.seconds(STREAMING_TIMEOUT_SECONDS),
            }
        return resource.add_method(
            method,
            apigw.LambdaIntegration(function, proxy=True, allow_test_invoke=False, **options),
            request_validator=self.request_validator,
            request_parameters=path_parameters(path) or None,
        )

    def _acknowledge_findings(self) -> None:
        no_authorizer = (
            "Gantry API keys are verified by the Lambda functions themselves (HMAC-SHA256 of "
            "the key with a server pepper, plus scopes and rate limits); an API Gateway or "
            "Cognito authorizer cannot check them. /health, /docs and /openapi.json are public "
            "by design."
        )
        acknowledge(self.rest_api, "AwsSolutions-APIG4", no_authorizer)
        acknowledge(self.rest_api, "AwsSolutions-COG4", no_authorizer)
        acknowledge(
            self.rest_api.node.find_child("CloudWatchRole"),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-level API Gateway logging role (needed for access and execution logs) "
            "uses the AWS-managed AmazonAPIGatewayPushToCloudWatchLogs policy, the documented "
            "policy for that role; it is shared by every REST API in the account and region.",
        )
        acknowledge(
            self.rest_api,
            "AwsSolutions-APIG3",
            "No WAF web ACL by default: per-key rate limits and quotas are enforced by the "
            "functions and a stage-wide throttle by API Gateway. Operators who need IP rules "
            "can associate a web ACL with the prod stage.",
        )
