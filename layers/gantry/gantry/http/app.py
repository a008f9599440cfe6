"""The FastAPI application factory. Each Lambda function builds it once per process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute

from gantry import __version__
from gantry.config import get_settings
from gantry.http.errors import install_error_handlers
from gantry.http.middleware import GantryMiddleware
from gantry.http.pipeline import install_response_middleware
from gantry.http.routers import (
    batches,
    completions,
    conversations,
    files,
    fine_tuning,
    inference,
    keys,
    models,
    ops,
    usage,
    v2,
    webhooks,
)

FAMILIES = {
    "batches": batches.router,
    "completions": completions.router,
    "conversations": conversations.router,
    "files": files.router,
    "fine_tuning": fine_tuning.router,
    "inference": inference.router,
    "keys": keys.router,
    "models": models.router,
    "ops": ops.router,
    "usage": usage.router,
    "v2": v2.router,
    "webhooks": webhooks.router,
}

DESCRIPTION = """
An OpenAI-compatible AI API. Point any OpenAI SDK at `<this host>/v1` and use a Gantry key
(`Authorization: Bearer gnt_<key_id>_<secret>`). Errors always have one shape; see
[the error codes](/docs/errors).
"""


def api_routes(families: Iterable[str] | None = None) -> list[APIRoute]:
    """The routes of these families (all by default), with their full paths."""
    chosen = list(families) if families is not None else list(FAMILIES)
    return [r for f in chosen for r in FAMILIES[f].routes if isinstance(r, APIRoute)]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Provider calls and streamed tokens wait on worker threads; a long-lived server (not a
    # Lambda, which serves one request at a time) needs more of them than anyio's 40.
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = max(limiter.total_tokens, get_settings().worker_threads)
    yield


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(families: Iterable[str] | None = None) -> FastAPI:
    """An app serving the given route families (all of them by default)."""
    chosen = list(families) if families is not None else list(FAMILIES)
    unknown = set(chosen) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown route families: {sorted(unknown)}")
    app = FastAPI(
        lifespan=_lifespan,
        title="Gantry",
        version=__version__,
        description=DESCRIPTION,
        generate_unique_id_function=_operation_id,
    )
    for family in chosen:
        app.include_router(FAMILIES[family])
    install_error_handlers(app)
    install_response_middleware(app, api_routes(chosen))
    app.add_middleware(GantryMiddleware, max_body_bytes=get_settings().max_body_bytes)
    return app
