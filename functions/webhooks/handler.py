"""Lambda entry point for webhook endpoints: register, list, delete, test and the delivery
log (buffered responses, FastAPI through Mangum)."""

from gantry.http.lambda_adapter import observed_handler

handler = observed_handler(["webhooks"])
