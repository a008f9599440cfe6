"""`gantry invoke <function> <event.json>`: run a Lambda function locally against moto.

Buffered functions (handler.py) are called as Lambda calls them. Streaming functions
(run.sh + app.py, served by the Lambda Web Adapter in AWS) get the event's request played
into their ASGI app, and each chunk is printed the moment the app sends it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

from starlette.types import ASGIApp, Message

from gantry.local.moto_env import EXAMPLE_API_KEY


@dataclass
class LocalContext:
    """The attributes of a Lambda context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_millis: int = 29_000  # an API function's; the queue workers have 900 s

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


@dataclass
class StreamedResponse:
    status: int
    headers: dict[str, str]
    chunks: list[bytes]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def _module(function: str, filename: str, functions_dir: str) -> ModuleType:
    path = Path(functions_dir) / function / filename
    if not path.is_file():
        known = sorted(p.name for p in Path(functions_dir).iterdir() if p.is_dir())
        raise ValueError(f"no {filename} at {path}; functions: {', '.join(known) or 'none'}")
    spec = importlib.util.spec_from_file_location(f"functions_{function}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_streaming(function: str, functions_dir: str = "functions") -> bool:
    return (Path(functions_dir) / function / "run.sh").is_file()


def load_handler(function: str, functions_dir: str = "functions") -> Any:
    return _module(function, "handler.py", functions_dir).handler


def load_app(function: str, functions_dir: str = "functions") -> ASGIApp:
    app: ASGIApp = _module(function, "app.py", functions_dir).build()
    return app


def prepare_environment() -> None:
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "GantryLocal")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "gantry")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


def run_event(handler: Any, event: dict[str, Any], function: str) -> dict[str, Any]:
    result: dict[str, Any] = handler(event, LocalContext(function_name=f"gantry-{function}"))
    return result


def _scope(event: dict[str, Any]) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    query = event.get("multiValueQueryStringParameters") or {}
    seen = (event.get("requestContext") or {}).get("path") or ""
    path = event["path"]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": event["httpMethod"],
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": urlencode(query, doseq=True).encode(),
        "root_path": seen[: -len(path)] if seen.endswith(path) and seen != path else "",
        "headers": [(k.encode(), str(v).encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 0),
        "server": (headers.get("host", "localhost"), 443),
    }


async def stream_event(
    app: ASGIApp, event: dict[str, Any], on_chunk: Callable[[bytes], None] | None = None
) -> StreamedResponse:
    """Play a REST proxy event into an ASGI app, collecting (and reporting) each chunk."""
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    scope = _scope(event)
    if raw:
        scope["headers"].append((b"content-length", str(len(raw)).encode()))
    sent = False
    finished = asyncio.Event()
    response = StreamedResponse(0, {}, [])

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = int(message["status"])
            response.headers = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            if chunk:
                response.chunks.append(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)
            if not message.get("more_body", False):
                finished.set()

    await app(scope, receive, send)
    finished.set()
    return response


def invoke(function: str, event_path: str, functions_dir: str = "functions") -> int:
    from gantry.local.server import bootstrap

    prepare_environment()
    event = json.loads(Path(event_path).read_text())
    stack = bootstrap(os.environ.get("GANTRY_DEV_API_KEY") or EXAMPLE_API_KEY)
    try:
        if is_streaming(function, functions_dir):
            return _invoke_streaming(function, event, functions_dir)
        handler = load_handler(function, functions_dir)
        # Powertools writes logs and EMF metrics to stdout; keep stdout for the response.
        with contextlib.redirect_stdout(sys.stderr):
            response = run_event(handler, event, function)
    finally:
        stack.aws.stop()
    body = response.get("body")
    if isinstance(body, str) and not response.get("isBase64Encoded"):
        with contextlib.suppress(json.JSONDecodeError):
            response = {**response, "body": json.loads(body)}
    json.dump(response, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if int(response.get("statusCode", 500)) < 500 else 1


def _invoke_streaming(function: str, event: dict[str, Any], functions_dir: str) -> int:
    app = load_app(function, functions_dir)

    def show(chunk: bytes) -> None:
        sys.stdout.write(chunk.decode("utf-8", "replace"))
        sys.stdout.flush()

    response = asyncio.run(stream_event(app, event, show))
    sys.stderr.write(f"\nstatus {response.status} {json.dumps(response.headers)}\n")
    return 0 if response.status < 500 else 1
