"""Running the ASGI app inside a buffered Lambda function (API Gateway REST proxy events)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from mangum import Mangum
from starlette.types import ASGIApp, Receive, Scope, Send

from gantry.http.app import create_app

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


class StagePrefix:
    """Sets the ASGI root_path to the API Gateway stage prefix (e.g. `/prod`) that the
    client saw but the proxy event's `path` omits, so /docs loads /prod/openapi.json."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        event = scope.get("aws.event") or {}
        seen = (event.get("requestContext") or {}).get("path") or ""
        path = event.get("path") or ""
        if seen and path and seen != path and seen.endswith(path):
            scope = {**scope, "root_path": seen[: -len(path)]}
        await self.app(scope, receive, send)


_lock = threading.Lock()
_handlers: dict[tuple[str, ...], LambdaHandler] = {}


def asgi_handler(families: Iterable[str] | None = None) -> LambdaHandler:
    """The Mangum handler for these route families, built on first use and then reused."""
    key = tuple(families) if families is not None else ()
    found = _handlers.get(key)
    if found is None:
        with _lock:
            found = _handlers.get(key)
            if found is None:
                app = create_app(families if families is not None else None)
                found = Mangum(StagePrefix(app), lifespan="off", api_gateway_base_path="/")
                _handlers[key] = found
    return found


def observed_handler(families: Iterable[str] | None = None) -> LambdaHandler:
    """A Lambda entry point with Powertools wired in: structured logs correlated by the API
    Gateway request id, an X-Ray segment per invocation, and EMF metrics per status class."""
    from aws_lambda_powertools import Logger, Metrics, Tracer
    from aws_lambda_powertools.logging import correlation_paths
    from aws_lambda_powertools.metrics import MetricUnit

    chosen = list(families) if families is not None else None
    logger = Logger()
    tracer = Tracer()
    metrics = Metrics()

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        response = asgi_handler(chosen)(event, context)
        status_class = f"Status{int(response['statusCode']) // 100}xx"
        metrics.add_metric(name=status_class, unit=MetricUnit.Count, value=1)
        return response

    return handler
