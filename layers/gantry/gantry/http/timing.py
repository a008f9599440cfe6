"""Per-request step timings (auth, admission, cache, model, settlement), kept on the ASGI
scope's state so `?verbosity=verbose` and the v2 metadata can report them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request

STEPS = ("auth", "admission", "cache", "model", "settlement")


class Timings:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, step: str, ms: float) -> None:
        with self._lock:
            self.ms[step] = self.ms.get(step, 0.0) + ms

    @contextmanager
    def measure(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(step, (time.perf_counter() - started) * 1000)

    def breakdown(self) -> dict[str, float]:
        """Every step in milliseconds (0 for steps this request did not take)."""
        return {step: round(self.ms.get(step, 0.0), 3) for step in STEPS}


def _state(scope: MutableMapping[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def timings_of(request: Request | MutableMapping[str, Any]) -> Timings:
    scope = request.scope if isinstance(request, Request) else request
    state = _state(scope)
    found = state.get("timings")
    if not isinstance(found, Timings):
        found = Timings()
        state["timings"] = found
    return found


def mark_start(scope: MutableMapping[str, Any], started: float) -> None:
    _state(scope)["started"] = started


def processing_ms(request: Request | MutableMapping[str, Any]) -> int:
    """Milliseconds since the request reached the app."""
    scope = request.scope if isinstance(request, Request) else request
    started = _state(scope).get("started")
    if not isinstance(started, float):
        return 0
    return int((time.perf_counter() - started) * 1000)
