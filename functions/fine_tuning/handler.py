"""Lambda entry point for fine-tuning jobs: create (starts the state machine), list,
retrieve, events, cancel and results (buffered responses, FastAPI through Mangum)."""

from gantry.http.lambda_adapter import observed_handler

handler = observed_handler(["fine_tuning"])
