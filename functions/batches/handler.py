"""Lambda entry point for batches: create (starts the batch state machine), list, retrieve
and cancel (buffered responses, FastAPI through Mangum)."""

from gantry.http.lambda_adapter import observed_handler

handler = observed_handler(["batches"])
