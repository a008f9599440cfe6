"""The response middleware between the request-id layer and the routes, outermost first:
compression, the route table (deprecation, retirement), idempotency keys, projection."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.routing import APIRoute

from gantry.http.compression import CompressionMiddleware
from gantry.http.deprecation import DeprecationMiddleware
from gantry.http.idempotency import IdempotencyMiddleware
from gantry.http.projection import ProjectionMiddleware


def install_response_middleware(app: FastAPI, routes: Sequence[APIRoute]) -> None:
    """`routes`: the app's API routes (projection checks paths against their schemas)."""
    # Starlette wraps the app in the reverse order of add_middleware calls.
    app.add_middleware(ProjectionMiddleware, routes=list(routes))
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(DeprecationMiddleware)
    app.add_middleware(CompressionMiddleware)
