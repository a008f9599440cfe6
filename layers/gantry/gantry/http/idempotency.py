"""`Idempotency-Key` on POST: claim the key, run the request once, keep its response,
replay it to retries (`Idempotent-Replayed: true`), refuse a different body or a retry
while the first still runs (409).

Streamed responses (server-sent events) are kept too, once the stream has ended with
`[DONE]`, and a retry gets the whole event stream in one response. A stream that failed or
was cut off is not kept, so a retry runs again.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gantry.domain.auth import split_bearer
from gantry.domain.errors import GantryError
from gantry.domain.idempotency import (
    HEADER,
    LEASE_SECONDS,
    REPLAYED_HEADER,
    STREAM_LEASE_SECONDS,
    StoredResponse,
    fingerprint,
    record_id,
    replay,
    validate_key,
    wants_stream,
)
from gantry.domain.keys import Principal
from gantry.http.deps import note_use
from gantry.http.errors import render_gantry_error
from gantry.http.timing import timings_of
from gantry.runtime import Runtime, get_runtime

logger = logging.getLogger("gantry.idempotency")

_NOT_KEPT = {"content-length", "transfer-encoding", "connection", "keep-alive"}
_DONE = b"data: [DONE]\n\n"


async def authenticate(scope: Scope, rt: Runtime) -> Principal | None:
    """The verified caller, remembered for the route's Scope dependency; None if the
    credentials are missing or wrong (the route then answers 401 itself)."""
    state = scope.setdefault("state", {})
    known = state.get("principal")
    if isinstance(known, Principal):
        return known
    authorization = Headers(scope=scope).get("authorization")
    with timings_of(scope).measure("auth"):
        try:
            key_id, secret = split_bearer(authorization)
            hit, record = rt.authenticator.cached(key_id)
            if not hit:
                record = await run_in_threadpool(rt.authenticator.load, key_id)
            principal = rt.authenticator.verify(record, secret)
        except GantryError:
            return None
    if record is not None:
        note_use(rt, record)
    state["principal"] = principal
    return principal


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _request_id(scope: Scope) -> str | None:
    rid = scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


async def _send_stored(send: Send, stored: StoredResponse) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
    headers.append((b"content-length", str(len(stored.body)).encode()))
    headers.append((REPLAYED_HEADER.lower().encode(), b"true"))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw_key = Headers(scope=scope).get(HEADER)
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        try:
            await self._handle(scope, receive, send, raw_key)
        except GantryError as error:
            await render_gantry_error(error, _request_id(scope))(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, raw_key: str) -> None:
        key = validate_key(raw_key.strip())
        rt = get_runtime()
        principal = await authenticate(scope, rt)
        if principal is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "")
        query = scope.get("query_string", b"").decode("latin-1")
        fp = fingerprint(scope["method"], scope["path"], query, content_type, body)
        record = record_id(principal.key_id, key)
        lease = STREAM_LEASE_SECONDS if wants_stream(content_type, body) else LEASE_SECONDS
        existing = await run_in_threadpool(
            lambda: rt.idempotency.begin(
                record,
                fp,
                now=rt.clock.now(),
                lease_seconds=lease,
                org_id=principal.org_id,
                key_id=principal.key_id,
            )
        )
        if existing is not None:
            await _send_stored(send, replay(existing, fp))
            return
        await self._run_once(scope, receive, send, rt, record, fp, body)

    async def _run_once(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rt: Runtime,
        record: str,
        fp: str,
        body: bytes,
    ) -> None:
        delivered = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status = 0
        kept_headers: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        finished = False

        async def recording_send(message: Message) -> None:
            nonlocal status, finished
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    lowered = name.decode("latin-1").lower()
                    if lowered not in _NOT_KEPT:
                        kept_headers.append((lowered, value.decode("latin-1")))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    finished = True
                    await self._settle(rt, record, fp, status, kept_headers, chunks)
            await send(message)

        try:
            await self.app(scope, replay_receive, recording_send)
        finally:
            if not finished:
                await self._drop(rt, record, fp)

    async def _settle(
        self,
        rt: Runtime,
        record: str,
        fp: str,
        status: int,
        headers: list[tuple[str, str]],
        chunks: list[bytes],
    ) -> None:
        """Keep a complete successful response before its last byte goes out, so a retry
        that follows the response always finds it; drop the claim otherwise."""
        body = b"".join(chunks)
        streamed = any(k == "content-type" and "text/event-stream" in v for k, v in headers)
        if not 200 <= status < 300 or (streamed and not body.endswith(_DONE)):
            await self._drop(rt, record, fp)
            return
        stored = StoredResponse(status, tuple(headers), body)
        try:
            await run_in_threadpool(rt.idempotency.complete, record, fp, stored, rt.clock.now())
        except Exception:
            logger.error(
                "could not keep the response for an idempotency key; a retry after the "
                "claim's lease runs out would run the request again",
                exc_info=True,
            )

    async def _drop(self, rt: Runtime, record: str, fp: str) -> None:
        try:
            await run_in_threadpool(rt.idempotency.abandon, record, fp)
        except Exception:
            logger.warning("could not release an idempotency key", exc_info=True)
