"""Route dependencies: authentication with a declared scope, and the process runtime."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated
from weakref import WeakKeyDictionary

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from gantry.domain.auth import require_scope, split_bearer
from gantry.domain.key_management import LastUseTracker
from gantry.domain.keys import KeyRecord, Principal
from gantry.http.timing import timings_of
from gantry.runtime import Runtime, get_runtime

logger = logging.getLogger("gantry.http")

# One worker: last-use writes are rare (a key at most once a minute) and never block a request.
last_used_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gantry-last-used")
_trackers: WeakKeyDictionary[Runtime, LastUseTracker] = WeakKeyDictionary()

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="gnt_<key_id>_<secret>",
    description="A Gantry API key: `Authorization: Bearer gnt_<key_id>_<secret>`.",
)


def scope_of(dependant: Dependant) -> Scope | None:
    """The Scope dependency a route declares, if any."""
    stack = list(dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if isinstance(dependency.call, Scope):
            return dependency.call
        stack.extend(dependency.dependencies)
    return None


class Scope:
    """Dependency that authenticates the caller and requires `scope`.

    Every non-public route depends on exactly one of these; a test walks the app's routes to
    prove it. The key cache makes the warm path free of database calls.
    """

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        known = getattr(request.state, "principal", None)
        if isinstance(known, Principal):
            require_scope(known, self.scope)
            return known
        rt = get_runtime()
        authenticator = rt.authenticator
        with timings_of(request).measure("auth"):
            key_id, secret = split_bearer(request.headers.get("authorization"))
            hit, record = authenticator.cached(key_id)
            if not hit:
                record = await run_in_threadpool(authenticator.load, key_id)
            principal = authenticator.verify(record, secret)
        if record is not None:
            note_use(rt, record)
        request.state.principal = principal
        require_scope(principal, self.scope)
        return principal


def note_use(rt: Runtime, record: KeyRecord) -> None:
    """Record the key's last use off the request path, at most once a minute per key."""
    tracker = _trackers.get(rt)
    if tracker is None:
        tracker = _trackers.setdefault(rt, LastUseTracker(rt.key_store, rt.clock))
    at = tracker.due(record)
    if at is not None:
        last_used_writer.submit(_record_use, tracker, record.key_id, at)


def _record_use(tracker: LastUseTracker, key_id: str, at: float) -> None:
    try:
        tracker.record(key_id, at)
    except Exception:
        logger.warning("could not record the last use of key %s", key_id, exc_info=True)


async def runtime() -> Runtime:
    # async on purpose: FastAPI runs plain-def dependencies on a worker thread.
    return get_runtime()


CompletionsKey = Annotated[Principal, Depends(Scope("completions:write"))]
ModelsKey = Annotated[Principal, Depends(Scope("models:read"))]
KeysReader = Annotated[Principal, Depends(Scope("keys:read"))]
KeysWriter = Annotated[Principal, Depends(Scope("keys:write"))]
ConversationsReader = Annotated[Principal, Depends(Scope("conversations:read"))]
ConversationsWriter = Annotated[Principal, Depends(Scope("conversations:write"))]
CurrentRuntime = Annotated[Runtime, Depends(runtime)]
