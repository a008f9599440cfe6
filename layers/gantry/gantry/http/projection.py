"""`?fields=` and `?verbosity=` on any JSON response (errors are never trimmed).

- `fields=choices.message.content,usage` keeps only those dotted paths (through arrays:
  `choices.message.content` keeps that field of every choice). A path the route's
  documented response does not have is a 400 naming it, refused before the request runs.
- `verbosity=minimal` keeps a small preset per route (or drops null fields where there is
  none), `standard` is the full response, `verbose` adds `timing` (milliseconds spent in
  auth, admission, cache, model and settlement; inside `metadata` for the v2 envelope).
  With both, `fields` picks from the verbosity's response.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union
from urllib.parse import parse_qs

from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gantry.domain.errors import GantryError, InvalidRequest
from gantry.http.errors import render_gantry_error
from gantry.http.timing import timings_of

VERBOSITIES = ("minimal", "standard", "verbose")
TIMING_FIELD = "timing"
MAX_FIELDS = 64

# Routes' minimal presets, by (method, path template).
MINIMAL: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/v1/chat/completions"): (
        "id",
        "choices.index",
        "choices.message.content",
        "choices.finish_reason",
        "usage.total_tokens",
    ),
    ("POST", "/v1/completions"): (
        "id",
        "choices.index",
        "choices.text",
        "choices.finish_reason",
        "usage.total_tokens",
    ),
    ("POST", "/v2/chat/completions"): (
        "id",
        "output.choices.index",
        "output.choices.message.content",
        "output.choices.finish_reason",
        "usage.total_tokens",
        "usage.cost_usd",
    ),
    ("POST", "/v1/embeddings"): ("data.index", "data.embedding", "usage.total_tokens"),
    ("POST", "/v1/classifications"): ("id", "results.index", "results.label", "results.score"),
    ("POST", "/v1/moderations"): ("id", "results.flagged"),
    ("GET", "/v1/models"): ("data.id",),
}

Path = tuple[str, ...]


def parse_fields(raw: str) -> list[Path]:
    paths: list[Path] = []
    for part in raw.split(","):
        text = part.strip()
        if not text:
            continue
        segments = tuple(text.split("."))
        if any(not s for s in segments):
            raise InvalidRequest(
                f"Invalid field path '{text}' in 'fields': use dotted names such as "
                "'choices.message.content'.",
                code="invalid_value",
                param="fields",
            )
        if segments not in paths:
            paths.append(segments)
    if len(paths) > MAX_FIELDS:
        raise InvalidRequest(
            f"'fields' names {len(paths)} paths; at most {MAX_FIELDS} are allowed.",
            code="invalid_value",
            param="fields",
        )
    return paths


def parse_verbosity(raw: str) -> str:
    value = raw.strip().lower()
    if value not in VERBOSITIES:
        raise InvalidRequest(
            f"Invalid value for 'verbosity': '{raw}'. Use one of {', '.join(VERBOSITIES)}.",
            code="invalid_value",
            param="verbosity",
        )
    return value


# --- paths against the documented response ---------------------------------------------


def _members(annotation: Any) -> list[Any]:
    """The types a field may hold, with Optional, unions and lists unwrapped."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    if origin in (list, tuple, Sequence, set, frozenset):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _open(annotation: Any) -> bool:
    """A field whose inside is not documented (a mapping or Any): any sub-path is allowed."""
    origin = typing.get_origin(annotation)
    return annotation is Any or annotation is dict or origin in (dict, Mapping)


def known(model: type[BaseModel], path: Path) -> bool:
    candidates: list[Any] = [model]
    for segment in path:
        following: list[Any] = []
        for candidate in candidates:
            if _open(candidate):
                return True
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                field = candidate.model_fields.get(segment)
                if field is not None:
                    following.extend(_members(field.annotation))
        if not following:
            return False
        candidates = following
    return True


def _present(value: Any, path: Path) -> bool:
    if not path:
        return True
    if isinstance(value, list):
        return any(_present(item, path) for item in value)
    if isinstance(value, dict) and path[0] in value:
        return _present(value[path[0]], path[1:])
    return False


def _unknown(paths: Sequence[Path]) -> InvalidRequest:
    names = [".".join(p) for p in paths]
    return InvalidRequest(
        f"Unknown field path{'s' if len(names) > 1 else ''} in 'fields': "
        f"{', '.join(repr(n) for n in names)}. Name fields of this route's response "
        "(see /docs), with dots for nested fields.",
        code="invalid_value",
        param="fields",
        details={"unknown_fields": names},
    )


# --- trimming ------------------------------------------------------------------------------


def _tree(paths: Sequence[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for index, segment in enumerate(path):
            last = index == len(path) - 1
            if last:
                node[segment] = {}  # the whole value
                break
            child = node.get(segment)
            if child == {} and segment in node:
                break  # a shorter path already keeps all of it
            node = node.setdefault(segment, {})
    return tree


def project(value: Any, paths: Sequence[Path]) -> Any:
    return _apply(value, _tree(paths))


def _apply(value: Any, tree: dict[str, Any]) -> Any:
    if not tree:
        return value
    if isinstance(value, list):
        return [_apply(item, tree) for item in value]
    if isinstance(value, dict):
        return {k: _apply(v, tree[k]) for k, v in value.items() if k in tree}
    return value


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


# --- the middleware ------------------------------------------------------------------------


class Projection:
    def __init__(self, fields: list[Path] | None, verbosity: str, route: BaseRoute | None):
        self.fields = fields
        self.verbosity = verbosity
        self.route = route

    def apply(self, body: Any, timings: dict[str, float]) -> Any:
        if self.verbosity == "verbose" and isinstance(body, dict):
            if isinstance(body.get("metadata"), dict):
                body["metadata"][TIMING_FIELD] = timings
            else:
                body[TIMING_FIELD] = timings
        elif self.verbosity == "minimal":
            preset = self._preset()
            body = project(body, preset) if preset else without_nulls(body)
        if self.fields:
            if self._model() is None:
                missing = [p for p in self.fields if not _present(body, p)]
                if missing:
                    raise _unknown(missing)
            body = project(body, self.fields)
        return body

    def _preset(self) -> list[Path]:
        if not isinstance(self.route, APIRoute):
            return []
        for method in self.route.methods or ():
            found = MINIMAL.get((method, self.route.path))
            if found:
                return [tuple(p.split(".")) for p in found]
        return []

    def _model(self) -> type[BaseModel] | None:
        if isinstance(self.route, APIRoute):
            model = self.route.response_model
            if isinstance(model, type) and issubclass(model, BaseModel):
                return model
        return None

    def check(self) -> None:
        """Refuse unknown paths before the request runs, where the route documents its
        response."""
        model = self._model()
        if model is None or not self.fields:
            return
        timing = (TIMING_FIELD,), ("metadata", TIMING_FIELD)
        missing = [
            p
            for p in self.fields
            if not known(model, p) and not any(p[: len(t)] == t for t in timing)
        ]
        if missing:
            raise _unknown(missing)


def _route(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
    return None


class ProjectionMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope["query_string"].decode("latin-1"))
        if "fields" not in query and "verbosity" not in query:
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        try:
            fields = parse_fields(",".join(query.get("fields", [])))
            verbosity = parse_verbosity(query.get("verbosity", ["standard"])[-1])
            projection = Projection(fields or None, verbosity, _route(self.routes, scope))
            projection.check()
        except GantryError as error:
            await render_gantry_error(error, request_id)(scope, receive, send)
            return
        if projection.fields is None and verbosity == "standard":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Projector(scope, send, projection).send)


class _Projector:
    def __init__(self, scope: Scope, send: Send, projection: Projection) -> None:
        self._scope = scope
        self._send = send
        self._projection = projection
        self._start: Message | None = None
        self._chunks: list[bytes] = []
        self._passthrough = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            content_type = MutableHeaders(raw=list(message.get("headers", []))).get(
                "content-type", ""
            )
            # JSON objects only: a JSONL download streams through untouched.
            json_body = content_type.split(";", 1)[0].strip() == "application/json"
            if message.get("status", 200) >= 400 or not json_body:
                self._passthrough = True
                await self._send(message)
            else:
                self._start = message
            return
        if message["type"] != "http.response.body" or self._passthrough:
            await self._send(message)
            return
        self._chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        await self._finish()

    async def _finish(self) -> None:
        assert self._start is not None
        raw = b"".join(self._chunks)
        try:
            body = json.loads(raw)
            timings = timings_of(self._scope).breakdown()
            shaped = self._projection.apply(body, timings)
        except GantryError as error:
            request_id = self._scope.get("state", {}).get("request_id")
            response = render_gantry_error(error, request_id)
            await response(self._scope, _no_receive, self._send)
            return
        except ValueError:
            shaped = None
        data = (
            raw
            if shaped is None
            else json.dumps(shaped, separators=(",", ":"), ensure_ascii=False).encode()
        )
        headers = MutableHeaders(scope=self._start)
        headers["content-length"] = str(len(data))
        await self._send(self._start)
        await self._send({"type": "http.response.body", "body": data})


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
