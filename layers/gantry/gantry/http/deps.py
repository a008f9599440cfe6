"""Route dependencies: authentication with a declared scope, and the process runtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from gantry.domain.auth import require_scope, split_bearer
from gantry.domain.keys import Principal
from gantry.runtime import Runtime, get_runtime

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
        authenticator = get_runtime().authenticator
        key_id, secret = split_bearer(request.headers.get("authorization"))
        hit, record = authenticator.cached(key_id)
        if not hit:
            record = await run_in_threadpool(authenticator.load, key_id)
        principal = authenticator.verify(record, secret)
        request.state.principal = principal
        require_scope(principal, self.scope)
        return principal


async def runtime() -> Runtime:
    # async on purpose: FastAPI runs plain-def dependencies on a worker thread.
    return get_runtime()


CompletionsKey = Annotated[Principal, Depends(Scope("completions:write"))]
ModelsKey = Annotated[Principal, Depends(Scope("models:read"))]
CurrentRuntime = Annotated[Runtime, Depends(runtime)]
