"""Stateless serving path: layers, functions and the REST API in front of them."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.constants import FUNCTIONS_DIR
from infra.constructs.api import GantryApi
from infra.constructs.layers import SharedLayers
from infra.constructs.service_function import ServiceFunction, TableAccess
from infra.stacks.data_stack import DataStack

RW = TableAccess.READ_WRITE

# Route table: (method, path) per function. Every other route answers 404 in the envelope.
INFERENCE_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/classifications"),
    ("POST", "/v1/moderations"),
)
MODELS_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{id}"),
    ("GET", "/health"),
    ("GET", "/docs"),
    ("GET", "/docs/errors"),
    ("GET", "/openapi.json"),
)


class ApiStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, data: DataStack, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.layers = SharedLayers(self, "Layers")
        common: dict[str, Any] = {
            "layers": self.layers.all,
            "tables": data.tables.tables,
            "table_specs": data.tables.specs,
            "pepper": data.pepper.secret,
        }

        self.inference = ServiceFunction(
            self,
            "Inference",
            code_dir=FUNCTIONS_DIR / "inference",
            handler="handler.handler",
            description=(
                "Gantry inference: chat, completions, embeddings, classifications, moderations"
            ),
            # auth (keys: last_used_at), admission (quotas), settlement (usage), cache, idempotency
            table_access={
                "keys": RW,
                "quotas": RW,
                "usage": RW,
                "cache": RW,
                "idempotency": RW,
            },
            **common,
        )
        self.models = ServiceFunction(
            self,
            "Models",
            code_dir=FUNCTIONS_DIR / "models",
            handler="handler.handler",
            description="Gantry models, health and API docs",
            # auth (keys: last_used_at), request-rate admission (quotas), usage ledger
            table_access={"keys": RW, "quotas": RW, "usage": RW},
            **common,
        )

        self.api = GantryApi(self, "Api")
        for method, path in INFERENCE_ROUTES:
            self.api.add_route(method, path, self.inference.function)
        for method, path in MODELS_ROUTES:
            self.api.add_route(method, path, self.models.function)

        CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL of the Gantry API")
        CfnOutput(
            self,
            "OpenAIBaseUrl",
            value=f"{self.api.url}v1",
            description="base_url for OpenAI SDKs and other OpenAI-compatible clients",
        )
        CfnOutput(self, "InferenceFunctionName", value=self.inference.function_name)
        CfnOutput(self, "ModelsFunctionName", value=self.models.function_name)
