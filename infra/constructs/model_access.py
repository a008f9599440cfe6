"""What the model-calling functions may reach (Bedrock models and guardrails, an
OpenAI-compatible server, all named by the operator in CDK context, nothing by default),
and how long a request in them may take (`GANTRY_REQUEST_TIMEOUT_SECONDS`, set below the
function's timeout so timeouts nest).

    -c 'gantry:bedrockModelIds=["meta.llama3-1-8b-instruct-v1:0", "us.anthropic.claude-..."]'
    -c 'gantry:bedrockGuardrailIds=["abcd1234"]'
    -c gantry:openaiBaseUrl=http://vllm.internal:8000/v1
    -c gantry:openaiApiKeySecretArn=arn:aws:secretsmanager:...:secret:openai-key

A foundation model is granted in the stack's region only. A cross-region inference profile
(an id with a geography prefix such as `us.`) is granted with its foundation model in every
region, since the profile routes requests across regions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constructs.service_function import ServiceFunction
from infra.nag import acknowledge

MODELS_CONTEXT = "gantry:bedrockModelIds"
GUARDRAILS_CONTEXT = "gantry:bedrockGuardrailIds"
OPENAI_URL_CONTEXT = "gantry:openaiBaseUrl"
OPENAI_SECRET_CONTEXT = "gantry:openaiApiKeySecretArn"
PROFILE_PREFIXES = ("us.", "eu.", "apac.", "us-gov.", "global.", "jp.", "au.", "ca.")
INVOKE_ACTIONS = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]


def request_budget_seconds(function_timeout: float) -> int:
    """The request's time budget inside a function: a margin below its timeout, so a slow
    provider is answered with 504 before Lambda ends the invocation."""
    margin = max(4, math.ceil(function_timeout * 0.05))
    return max(1, int(function_timeout) - margin)


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of ids in CDK context")
    return list(value)


def model_arns(model_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """The ARNs to grant, and the models granted in every region (inference profiles)."""
    arns: list[str] = []
    cross_region: list[str] = []
    for model_id in model_ids:
        if model_id.startswith(PROFILE_PREFIXES):
            base = model_id.split(".", 1)[1]
            arns.append(
                f"arn:{Aws.PARTITION}:bedrock:{Aws.REGION}:{Aws.ACCOUNT_ID}:inference-profile/"
                f"{model_id}"
            )
            arns.append(f"arn:{Aws.PARTITION}:bedrock:*::foundation-model/{base}")
            cross_region.append(base)
        else:
            arns.append(f"arn:{Aws.PARTITION}:bedrock:{Aws.REGION}::foundation-model/{model_id}")
    return arns, cross_region


class ModelAccess(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, functions: Sequence[ServiceFunction]
    ) -> None:
        super().__init__(scope, construct_id)
        models = _strings(self.node.try_get_context(MODELS_CONTEXT))
        guardrails = _strings(self.node.try_get_context(GUARDRAILS_CONTEXT))
        base_url = self.node.try_get_context(OPENAI_URL_CONTEXT)
        secret_arn = self.node.try_get_context(OPENAI_SECRET_CONTEXT)
        secret = (
            secretsmanager.Secret.from_secret_complete_arn(self, "OpenAIKey", str(secret_arn))
            if secret_arn
            else None
        )
        arns, cross_region = model_arns(models)
        guardrail_arns = [
            f"arn:{Aws.PARTITION}:bedrock:{Aws.REGION}:{Aws.ACCOUNT_ID}:guardrail/{guardrail}"
            for guardrail in guardrails
        ]
        for service in functions:
            timeout = service.function.timeout
            if timeout is not None:
                budget = request_budget_seconds(timeout.to_seconds())
                if service.request_budget is not None:
                    budget = min(budget, service.request_budget)
                service.function.add_environment("GANTRY_REQUEST_TIMEOUT_SECONDS", str(budget))
            if arns:
                service.role.add_to_principal_policy(
                    iam.PolicyStatement(actions=INVOKE_ACTIONS, resources=arns)
                )
            if guardrail_arns:
                service.role.add_to_principal_policy(
                    iam.PolicyStatement(
                        actions=["bedrock:ApplyGuardrail"], resources=guardrail_arns
                    )
                )
            if base_url:
                service.function.add_environment("GANTRY_OPENAI_BASE_URL", str(base_url))
            if secret is not None:
                secret.grant_read(service.role)
                service.function.add_environment(
                    "GANTRY_OPENAI_API_KEY_SECRET_ARN", secret.secret_arn
                )
            for base in cross_region:
                acknowledge(
                    service.role.node.find_child("DefaultPolicy"),
                    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:*::"
                    f"foundation-model/{base}]",
                    "A cross-region inference profile routes each request to this foundation "
                    "model in any region of its geography, so the named model is granted in "
                    "every region.",
                )
