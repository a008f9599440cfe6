"""Lambda entry point for the model catalogue and the operational routes (health, docs,
OpenAPI spec). It builds the whole app so /docs and /openapi.json describe every route."""

from gantry.http.lambda_adapter import observed_handler

handler = observed_handler()
