"""The files function: upload (multipart), list, retrieve, delete and download.

Downloads stream (a batch's output file can be far larger than the 6 MB a buffered Lambda
response may carry), so the app runs under uvicorn behind the AWS Lambda Web Adapter
(run.sh), like the completions function. /health is included for the adapter's readiness
check.
"""

from starlette.types import ASGIApp

from gantry.http.app import create_app
from gantry.http.request_metrics import RequestMetrics


def build() -> ASGIApp:
    return RequestMetrics(create_app(["files", "ops"]))
