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

from bench.caching import measure as measure_caching
from bench.caching import section as caching_section
from bench.conversations import TURNS as CONVERSATION_TURNS
from bench.conversations import measure as measure_conversations
from bench.conversations import section as conversations_section
from bench.loadgen import LoadResult, build_request, run_load
from bench.metering import costs_section, cpu_per_request, logic_cpu_ms, measure_costs
from bench.providers import provider_section
from bench.streaming import HEADER as STREAM_HEADER
from bench.streaming import measure_streams

ROOT = Path(__file__).resolve().parents[1]
BENCH_KEY = "gnt_benchexample01_LocalBenchmarkOnlySecret0123456789"
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
def server(
    command: list[str], port: int, env: dict[str, str] | None = None, health: str = "/health"
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}{health}", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {command}")
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(port: int, headers: dict[str, str]) -> list[LoadResult]:
    payload = build_request("/v1/chat/completions", CHAT_BODY, headers)
    return [run_load(port, payload, c, seconds=SECONDS) for c in CONCURRENCY]


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
    runs: dict[str, list[LoadResult]] = {}
    cpu: dict[str, float] = {}
    dynamodb_port = free_port()
    auth = {"Authorization": f"Bearer {BENCH_KEY}"}
    with server(
        [python, "-m", "bench.metering", "--serve-dynamodb", "--port", str(dynamodb_port)],
        dynamodb_port,
        health="/moto-api/",
    ):
        for metering in ("off", "on"):
            print(f"gantry: local server, auth on, metering {metering} ...", flush=True)
            command = [python, "-m", "bench.metering", "--port", str(gantry_port)]
            command += ["--key", BENCH_KEY, "--dynamodb", f"http://127.0.0.1:{dynamodb_port}"]
            with server(command, gantry_port, {"GANTRY_METERING": metering}) as process:
                runs[metering] = measure(gantry_port, auth)
                cpu[metering] = cpu_per_request(gantry_port, process.pid, auth)
        print("gantry: streaming overhead, metering off ...", flush=True)
        command = [python, "-m", "bench.metering", "--port", str(gantry_port)]
        command += ["--key", BENCH_KEY, "--dynamodb", f"http://127.0.0.1:{dynamodb_port}"]
        with server(command, gantry_port, {"GANTRY_METERING": "off"}):
            streams = [measure_streams(gantry_port, BENCH_KEY, c, SECONDS) for c in CONCURRENCY]
        dynamodb_url = f"http://127.0.0.1:{dynamodb_port}"
        providers = provider_section(server, free_port, dynamodb_url, BENCH_KEY, SECONDS)
    print("DynamoDB round trips and units per request ...", flush=True)
    costs = measure_costs()
    logic_ms = logic_cpu_ms()
    print("response cache and compression ...", flush=True)
    cache_figures, wire_figures = measure_caching()
    print(f"conversations: DynamoDB per turn over {CONVERSATION_TURNS} turns ...", flush=True)
    conversation_runs = measure_conversations()

    rows = [("floor", r) for r in floor]
    rows += [(f"gantry, metering {m}", r) for m in ("off", "on") for r in runs[m]]
    ratios = "\n".join(
        f"| {f.concurrency} | {off.rps / f.rps:.2f} | {on.rps / f.rps:.2f} "
        f"| {on.p99:.1f} vs {off.p99:.1f} |"
        for f, off, on in zip(floor, runs["off"], runs["on"], strict=True)
    )
    report = f"""# Benchmarks

Measured by `make bench` on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}.

Machine: {machine()}.

## Chat completions: Gantry's local server against the floor

`POST /v1/chat/completions` with the instant `gantry-echo` model, authentication on (a real
key checked against its HMAC; the key cache warm), one uvicorn process, a closed-loop
keep-alive load generator ({SECONDS:.0f} s per level after 1 s of warm-up). The floor is a
bare FastAPI app returning a fixed completion body under the same uvicorn settings: the most
this machine serves for such a route. Both parse HTTP with httptools (uvicorn's C parser, a
dependency since 2026-11-28); under the pure-Python h11 parser used before, both served
fewer requests, the floor about half as many, so the ratio to the floor fell while Gantry's
own requests/s rose.

With metering on, every request is admitted against every limit (one conditional write to
the organization's quota item) and settled (one transaction: ledger item, two usage
counters, refund); the organization's limits are set high enough that nothing is refused.
Those writes go to the local DynamoDB emulator (moto, in its own process), which applies
one request at a time, spends about 10-20 ms on each of these writes and shares the
machine's two cores: the "metering on" rows measure the emulator more than Gantry. Gantry's
own CPU per request, the round trips and the write units below are what carries over to
AWS, where a conditional write takes a few milliseconds.

{table(rows)}

Share of the floor's requests/s (target: at least 0.33 with metering off), and p99 latency
in ms with metering on vs off:

| concurrency | metering off / floor | metering on / floor | p99 on vs off |
|---:|---:|---:|---:|
{ratios}

Gantry's own CPU per request (the server process alone; the DynamoDB emulator runs in
another process), measured over 400 sequential requests: **{cpu["off"]:.2f} ms** with
metering off, **{cpu["on"]:.2f} ms** with metering on, so admission and settlement add
**{cpu["on"] - cpu["off"]:.2f} ms** of CPU per request. Of that, the metering logic itself
(planning, expressions, parsing, headers, settlement items) takes {logic_ms:.2f} ms; the rest
is botocore preparing, validating, signing and parsing the two calls, opening a connection
per call (the emulator closes each one), and the worker-thread hop. This is the part that
carries over to Lambda, minus the connections, which stay open there.

## DynamoDB per request: limits and usage (warm path)

Counted with a botocore hook over 200 warm requests after a first one (target: one round
trip before the model call, at admission, and one after it, at settlement). Prices:
on-demand, $0.625 per million write units and $0.125 per million read units.

{costs_section(costs)}

## Streaming: what the server adds to the provider's own timing

`POST /v1/chat/completions` with `stream: true` on `gantry-echo-paced`, which produces one
token every 20 ms (24 tokens per stream), metering off, closed-loop streams on keep-alive
connections for {SECONDS:.0f} s per level. "First chunk +ms" is the time from sending the
request to the first content chunk minus the provider's 20 ms; "gap +ms" is each interval
between content chunks minus 20 ms; a gap under 2 ms counts as coalesced (two tokens in
one burst). Target: under 5 ms added at p50 and no coalescing.

{STREAM_HEADER}
{chr(10).join(stats.row() for stats in streams)}

Each token is one provider call on a worker thread and one SSE frame. At 64 concurrent
streams the server handles about 3,200 frames/s on one Python process sharing two cores
with the load generator, and queueing shows up in the p50 figures there.

{providers}
{caching_section(cache_figures, wire_figures)}

## Conversations: DynamoDB per turn as a conversation grows

One conversation of {CONVERSATION_TURNS} turns per context strategy on `gantry-small`
(4,096-token window, replies of at most 64 tokens), counted with a botocore hook on the
conversations table, averaged over 10 turns at each point (target: bounded by what fits
the context window, not growing with the history):

{conversations_section(conversation_runs)}
"""
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
