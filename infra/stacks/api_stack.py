"""Stateless serving path: layers, functions and the REST API in front of them."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Fn, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.constants import FUNCTIONS_DIR, WEB_ADAPTER_LAYER_ARN, WEB_ADAPTER_LAYER_CONTEXT
from infra.constructs.api import GantryApi
from infra.constructs.batches import GantryBatches
from infra.constructs.jobs import GantryJobs
from infra.constructs.layers import SharedLayers
from infra.constructs.model_access import ModelAccess
from infra.constructs.service_function import ServiceFunction, TableAccess
from infra.constructs.settlements import GantrySettlements
from infra.stacks.data_stack import DataStack

RW = TableAccess.READ_WRITE
READ = TableAccess.READ

# Route table: (method, path) per function. Every other route answers 404 in the envelope.
COMPLETIONS_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/conversations/{id}/messages"),
    ("POST", "/v2/chat/completions"),
)
INFERENCE_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/classifications"),
    ("POST", "/v1/moderations"),
)
KEYS_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys/{id}"),
    ("PATCH", "/v1/keys/{id}"),
    ("DELETE", "/v1/keys/{id}"),
    ("POST", "/v1/keys/{id}/rotate"),
)
USAGE_ROUTES: tuple[tuple[str, str], ...] = (("GET", "/v1/usage"),)
# Posting a message runs the model (and may stream): that route is the completions function's.
CONVERSATIONS_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/conversations"),
    ("GET", "/v1/conversations/{id}"),
    ("DELETE", "/v1/conversations/{id}"),
    ("GET", "/v1/conversations/{id}/messages"),
)
MODELS_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{id}"),
    ("GET", "/health"),
    ("GET", "/docs"),
    ("GET", "/docs/errors"),
    ("GET", "/docs/versioning"),
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
            description="Gantry inference: embeddings, classifications, moderations",
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
        self.keys = ServiceFunction(
            self,
            "Keys",
            code_dir=FUNCTIONS_DIR / "keys",
            handler="handler.handler",
            description="Gantry API key management: create, list, update, revoke, rotate",
            # POSTs accept Idempotency-Key: responses are kept in the idempotency table
            table_access={"keys": RW, "idempotency": RW},
            **common,
        )
        self.usage = ServiceFunction(
            self,
            "Usage",
            code_dir=FUNCTIONS_DIR / "usage",
            handler="handler.handler",
            description="Gantry usage: totals, breakdowns, limits and quota warnings",
            # auth (keys: last_used_at); reads the quota items and the usage counters
            table_access={"keys": RW, "quotas": READ, "usage": READ},
            **common,
        )
        self.conversations = ServiceFunction(
            self,
            "Conversations",
            code_dir=FUNCTIONS_DIR / "conversations",
            handler="handler.handler",
            description="Gantry conversations: create, read, list messages, delete",
            # auth (keys: last_used_at); POSTs accept Idempotency-Key (idempotency)
            table_access={"keys": RW, "conversations": RW, "idempotency": RW},
            **common,
        )

        # Mangum buffers, so completions run under uvicorn behind the Lambda Web Adapter,
        # which streams what the app writes (stream: true) and serves stream: false too.
        web_adapter = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "WebAdapter",
            self.node.try_get_context(WEB_ADAPTER_LAYER_CONTEXT) or Fn.sub(WEB_ADAPTER_LAYER_ARN),
        )
        self.completions = ServiceFunction(
            self,
            "Completions",
            code_dir=FUNCTIONS_DIR / "completions",
            handler="run.sh",
            description="Gantry chat and text completions, buffered or streamed (SSE)",
            web_adapter=web_adapter,
            # + conversations: POST /v1/conversations/{id}/messages runs here
            table_access={
                "keys": RW,
                "quotas": RW,
                "usage": RW,
                "cache": RW,
                "idempotency": RW,
                "conversations": RW,
            },
            **common,
        )

        self.jobs = GantryJobs(self, "Jobs", web_adapter=web_adapter, **common)
        self.batches = GantryBatches(self, "Batches", jobs=self.jobs, **common)

        # The functions that admit and settle requests (they write quotas and usage) spool
        # the settlements they cannot write; the settlement worker replays them.
        self.settlements = GantrySettlements(self, "Settlements", **common)
        self.settlements.spool_for(
            self.inference, self.completions, self.models, self.batches.worker
        )

        # Bedrock, OpenAI-compatible servers and request budgets for the model-calling
        # functions; the batch worker runs batch lines through the same app.
        self.model_access = ModelAccess(
            self,
            "ModelAccess",
            functions=[self.inference, self.completions, self.batches.worker],
        )
        self.jobs.serve_fine_tuned_models(
            self.inference, self.completions, self.models, self.batches.worker
        )

        self.api = GantryApi(self, "Api")
        for method, path in COMPLETIONS_ROUTES:
            self.api.add_route(method, path, self.completions.function, streaming=True)
        for method, path in INFERENCE_ROUTES:
            self.api.add_route(method, path, self.inference.function)
        for method, path in MODELS_ROUTES:
            self.api.add_route(method, path, self.models.function)
        for method, path in KEYS_ROUTES:
            self.api.add_route(method, path, self.keys.function)
        for method, path in USAGE_ROUTES:
            self.api.add_route(method, path, self.usage.function)
        for method, path in CONVERSATIONS_ROUTES:
            self.api.add_route(method, path, self.conversations.function)
        for method, path, function in [*self.jobs.routes, *self.batches.routes]:
            self.api.add_route(method, path, function)
        for method, path, function in self.jobs.streaming_routes:
            self.api.add_route(method, path, function, streaming=True)

        CfnOutput(self, "ApiUrl", value=self.api.url, description="Base URL of the Gantry API")
        CfnOutput(
            self,
            "OpenAIBaseUrl",
            value=f"{self.api.url}v1",
            description="base_url for OpenAI SDKs and other OpenAI-compatible clients",
        )
        CfnOutput(self, "CompletionsFunctionName", value=self.completions.function_name)
        CfnOutput(self, "InferenceFunctionName", value=self.inference.function_name)
        CfnOutput(self, "ModelsFunctionName", value=self.models.function_name)
        CfnOutput(self, "KeysFunctionName", value=self.keys.function_name)
        CfnOutput(self, "UsageFunctionName", value=self.usage.function_name)
        CfnOutput(self, "ConversationsFunctionName", value=self.conversations.function_name)
