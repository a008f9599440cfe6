"""Operational routes that need no key: health, and the error code reference."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import HTMLResponse, Response

from gantry import __version__
from gantry.http.error_codes import ERROR_CODES, render_reference
from gantry.http.responses import json_response
from gantry.http.versioning_page import render_versioning
from gantry.runtime import get_runtime

router = APIRouter(tags=["ops"])

# Routes that deliberately need no key. Every other route declares a scope.
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/docs",
        "/docs/errors",
        "/docs/versioning",
        "/openapi.json",
        "/docs/oauth2-redirect",
    }
)


@router.get("/health", operation_id="ops-health", summary="Liveness check (no key needed)")
async def health() -> Response:
    return json_response({"status": "ok", "version": __version__})


@router.get(
    "/docs/errors",
    operation_id="ops-error-codes",
    summary="Reference of every error code",
    response_class=HTMLResponse,
)
async def error_reference() -> Response:
    return HTMLResponse(render_reference(ERROR_CODES))


@router.get(
    "/docs/versioning",
    operation_id="ops-versioning",
    summary="Deprecated and retired routes and models, and the policy",
    response_class=HTMLResponse,
)
async def versioning_reference() -> Response:
    return HTMLResponse(render_versioning(get_runtime()))
