"""The streaming completions function: chat and text completions (buffered or streamed).

Mangum cannot stream, so this function runs the app under uvicorn behind the AWS Lambda Web
Adapter (run.sh), which relays each chunk as Lambda response streaming. /health is
included for the adapter's readiness check.
"""

from fastapi import FastAPI

from gantry.http.app import create_app


def build() -> FastAPI:
    return create_app(["completions", "ops"])
