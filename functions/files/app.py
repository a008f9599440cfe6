"""The files function: upload (multipart), list, retrieve, delete and download.

Downloads stream (a batch's output file can be far larger than the 6 MB a buffered Lambda
response may carry), so the app runs under uvicorn behind the AWS Lambda Web Adapter
(run.sh), like the completions function. /health is included for the adapter's readiness
check.
"""

from fastapi import FastAPI

from gantry.http.app import create_app


def build() -> FastAPI:
    return create_app(["files", "ops"])
