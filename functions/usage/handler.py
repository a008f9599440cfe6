"""Lambda entry point for usage reporting: GET /v1/usage (buffered, FastAPI through Mangum)."""

from gantry.http.lambda_adapter import observed_handler

handler = observed_handler(["usage"])
