"""Runs a batch's lines through the API app in this process (ASGI, no network).

Each line takes the path an interactive request takes (validation, the same errors,
admission, the model, settlement, the response cache), as the key that created the batch:
the key is checked again (a revoked key stops its batches), and its principal is handed
to the app in the ASGI scope's state, which only in-process callers can set. The state
also marks the request as a batch line, which the usage layer bills at the registry's
batch discount.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from gantry.domain.batches import LineResult
from gantry.domain.errors import GantryError, Unauthenticated
from gantry.domain.keys import Principal
from gantry.http.errors import render_gantry_error
from gantry.runtime import Runtime

# The route families a batch line may reach (chat and text completions, embeddings,
# classifications, moderations).
FAMILIES = ("completions", "inference")
BATCH_STATE = "batch"


class _AsKey:
    """Wraps the app so each request runs as `principal`, marked as a batch line and billed
    under the line's request id."""

    def __init__(self, app: ASGIApp, principal: Principal, request_id: str) -> None:
        self._app = app
        self._principal = principal
        self._request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        state["principal"] = self._principal
        state[BATCH_STATE] = True
        # The line's own id, the same on every run: the ledger records the line once.
        state["billing_id"] = self._request_id
        await self._app(scope, receive, send)


class AppLineRunner:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    @cached_property
    def app(self) -> ASGIApp:
        from gantry.http.app import create_app

        return create_app(FAMILIES)

    def _principal(self, key_id: str) -> Principal:
        authenticator = self._rt.authenticator
        hit, record = authenticator.cached(key_id)
        if not hit:
            record = authenticator.load(key_id)
        if record is None:
            raise Unauthenticated(
                f"The API key {key_id} that created this batch no longer exists.",
                code="invalid_api_key",
            )
        return authenticator.active(record)

    def run(self, key_id: str, request_id: str, url: str, body: Mapping[str, Any]) -> LineResult:
        try:
            principal = self._principal(key_id)
        except GantryError as error:
            response = render_gantry_error(error, request_id)
            return LineResult(response.status_code, request_id, json.loads(bytes(response.body)))
        return asyncio.run(self._post(principal, request_id, url, body))

    async def _post(
        self, principal: Principal, request_id: str, url: str, body: Mapping[str, Any]
    ) -> LineResult:
        transport = httpx.ASGITransport(app=_AsKey(self.app, principal, request_id))
        async with httpx.AsyncClient(transport=transport, base_url="http://batch") as client:
            response = await client.post(url, json=body, headers={"x-request-id": request_id})
        retry_after = response.headers.get("retry-after")
        return LineResult(
            response.status_code,
            response.headers.get("x-request-id", request_id),
            response.json(),
            float(retry_after) if retry_after else None,
        )
