"""The streaming completions function: chat and text completions (buffered or streamed),
v1 and v2.

Mangum cannot stream, so this function runs the app under uvicorn behind the AWS Lambda Web
Adapter (run.sh), which relays each chunk as Lambda response streaming. /health is
included for the adapter's readiness check. The conversations family is included for
POST /v1/conversations/{id}/messages, which runs the model and may stream; API Gateway
sends the family's other routes to the buffered conversations function.
"""

from starlette.types import ASGIApp

from gantry.http.app import create_app
from gantry.http.request_metrics import RequestMetrics


def build() -> ASGIApp:
    return RequestMetrics(create_app(["completions", "v2", "conversations", "ops"]))
