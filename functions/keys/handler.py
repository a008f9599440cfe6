"""Lambda entry point for key management: create, list, retrieve, update, revoke and rotate
API keys (buffered responses, FastAPI through Mangum)."""

from gantry.http.lambda_adapter import observed_handler

handler = observed_handler(["keys"])
