"""`make bench`: Gantry's local server against the floor, and DynamoDB calls per request.

Writes docs/benchmarks.md. Figures are from this machine; the ratio to the floor is the one
that carries over."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.loadgen import LoadResult, build_request, run_load

ROOT = Path(__file__).resolve().parents[1]
BENCH_KEY = "gnt_benchkey01_BenchmarkOnlySecret0123456789abcd"
CONCURRENCY = (1, 16, 64)
SECONDS = float(os.environ.get("GANTRY_BENCH_SECONDS", "5"))
CHAT_BODY = json.dumps(
    {"model": "gantry-echo", "messages": [{"role": "user", "content": "Hello there"}]}
).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[None]:
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {command}")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(port: int, headers: dict[str, str]) -> list[LoadResult]:
    payload = build_request("/v1/chat/completions", CHAT_BODY, headers)
    return [run_load(port, payload, c, seconds=SECONDS) for c in CONCURRENCY]


def dynamodb_calls_per_request(requests: int = 200) -> tuple[int, float]:
    """(calls on the first request, calls per warm request), counted with a botocore hook."""
    os.environ["GANTRY_DEV_API_KEY"] = BENCH_KEY
    from fastapi.testclient import TestClient

    from gantry.adapters.aws import client
    from gantry.http.app import create_app
    from gantry.local.server import bootstrap

    stack = bootstrap(BENCH_KEY)
    calls: list[str] = []
    dynamodb = client("dynamodb", stack.runtime.settings)
    dynamodb.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    try:
        with TestClient(create_app()) as test_client:
            headers = {"Authorization": f"Bearer {BENCH_KEY}"}
            body = json.loads(CHAT_BODY)
            assert test_client.post("/v1/chat/completions", json=body, headers=headers).is_success
            cold = len(calls)
            for _ in range(requests):
                test_client.post("/v1/chat/completions", json=body, headers=headers)
            warm = (len(calls) - cold) / requests
    finally:
        stack.aws.stop()
    return cold, warm


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load generator and server share the machine"
    )


def table(rows: list[tuple[str, LoadResult]]) -> str:
    out = [
        "| server | concurrency | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        out.append(
            f"| {name} | {r.concurrency} | {r.rps:,.0f} | {r.p50:.2f} | {r.p99:.2f} | {r.errors} |"
        )
    return "\n".join(out)


def main() -> int:
    python = sys.executable
    floor_port, gantry_port = free_port(), free_port()
    print("floor: bare FastAPI ...", flush=True)
    with server([python, "-m", "bench.floor", "--port", str(floor_port)], floor_port):
        floor = measure(floor_port, {})
    print("gantry: local server, auth on, gantry-echo ...", flush=True)
    with server(
        [python, "-m", "gantry.local.cli", "dev", "--port", str(gantry_port)],
        gantry_port,
        {"GANTRY_DEV_API_KEY": BENCH_KEY},
    ):
        gantry = measure(gantry_port, {"Authorization": f"Bearer {BENCH_KEY}"})
    cold_calls, warm_calls = dynamodb_calls_per_request()

    rows = [("floor", r) for r in floor] + [("gantry", r) for r in gantry]
    ratios = "\n".join(
        f"| {g.concurrency} | {g.rps / f.rps:.2f} |" for f, g in zip(floor, gantry, strict=True)
    )
    report = f"""# Benchmarks

Measured by `make bench` on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.

Machine: {machine()}.

## Chat completions: Gantry's local server against the floor

`POST /v1/chat/completions` with the instant `gantry-echo` model, authentication on (a real
key checked against its HMAC; the key cache warm), one uvicorn process, a closed-loop
keep-alive load generator ({SECONDS:.0f} s per level after 1 s of warm-up). The floor is a
bare FastAPI app returning a fixed completion body under the same uvicorn settings: the most
this machine serves for such a route.

{table(rows)}

Gantry's share of the floor's requests/s (target: at least 0.33):

| concurrency | gantry / floor |
|---:|---:|
{ratios}

## DynamoDB calls per request (warm path)

Counted with a botocore `before-call` hook over 200 requests after a first one:

| request | DynamoDB calls |
|---|---:|
| first (key not cached) | {cold_calls} |
| warm (key cached) | {warm_calls:.2f} |

Target: zero DynamoDB calls before the model call once the key is cached.
"""
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
