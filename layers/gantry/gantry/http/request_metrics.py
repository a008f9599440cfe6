"""A metric per request for the functions that run the app under uvicorn behind the Lambda
Web Adapter (completions, files). No Lambda handler of ours wraps their requests, so this
middleware emits what `observed_handler` emits for the buffered functions: a `StatusNxx`
count, as CloudWatch embedded metric format on stdout (the function's log stream)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The adapter's readiness probe is not traffic.
UNCOUNTED_PATHS = frozenset({"/health"})


def emit_status(status: int) -> None:
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name=f"Status{status // 100}xx", unit=MetricUnit.Count, value=1):
        pass


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNCOUNTED_PATHS:
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app fails before it starts a response

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            emit_status(status)
