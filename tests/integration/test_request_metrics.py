"""The Web Adapter functions (completions, files) count every request by status class in
CloudWatch's embedded metric format, as the buffered functions' handlers do."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gantry.local.invoke import load_app, prepare_environment
from gantry.runtime import Runtime

FUNCTIONS = str(Path(__file__).resolve().parents[2] / "functions")
CHAT = {"model": "gantry-echo", "messages": [{"role": "user", "content": "hi"}]}
REQUESTS = {
    "completions": ("POST", "/v1/chat/completions", CHAT),
    "files": ("GET", "/v1/files", None),
}


def _metric_names(out: str) -> list[str]:
    blobs: list[dict[str, Any]] = [
        json.loads(line) for line in out.splitlines() if line.startswith("{")
    ]
    return [
        metric["Name"]
        for blob in blobs
        if "_aws" in blob
        for directive in blob["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    ]


async def _send(function: str, method: str, path: str, key: str | None, body: Any) -> int:
    transport = httpx.ASGITransport(app=load_app(function, FUNCTIONS))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://lwa") as client:
        response = await client.request(method, path, headers=headers, json=body)
        return response.status_code


@pytest.mark.parametrize("function", sorted(REQUESTS))
def test_each_request_emits_its_status_class(
    runtime: Runtime, admin_key: str, function: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare_environment()
    method, path, body = REQUESTS[function]
    capsys.readouterr()
    assert asyncio.run(_send(function, "GET", "/health", None, None)) == 200
    assert asyncio.run(_send(function, method, path, admin_key, body)) == 200
    assert asyncio.run(_send(function, method, path, None, body)) == 401
    # The adapter's readiness probe is not counted.
    assert _metric_names(capsys.readouterr().out) == ["Status2xx", "Status4xx"]
