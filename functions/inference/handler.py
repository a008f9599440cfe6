"""Lambda entry point for the inference family: chat and text completions, embeddings,
classifications and moderations (buffered responses, FastAPI through Mangum)."""

from gantry.http.lambda_adapter import observed_handler

handler = observed_handler(["inference"])
