"""Remote providers: what Gantry's OpenAI-compatible path adds to calling the same upstream
server directly, and what hedging gains against an upstream with a long latency tail.

The upstream is `gantry.local.upstream` (an OpenAI-compatible server answering at once) in
its own process; Gantry serves a registry of the bundled models plus models on that
upstream, with authentication on and metering off, so the difference is the provider path
(auth, planning, token counting, the resilience rules, the pooled HTTP client, parsing).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import LoadResult, build_request, run_load
from bench.metering import cpu_seconds

REMOTE_CHAT = "bench-remote-chat"
PLAIN_EMBED = "bench-remote-embed"
HEDGED_EMBED = "bench-remote-embed-hedged"
CHAT = {"messages": [{"role": "user", "content": "Hello there, how are you?"}], "max_tokens": 16}
EMBED = {"input": "a sentence to embed"}
OVERHEAD_CONCURRENCY = (1, 16)
HEDGE_CONCURRENCY = 8
# Every request reaches the provider: the response cache would answer repeats itself.
NO_CACHE = {"Cache-Control": "no-cache, no-store"}
TAIL = {"latency_ms": 4.0, "tail_ms": 150.0, "tail_share": 0.03}

Server = Callable[..., AbstractContextManager[Any]]
OVERHEAD_HEADER = (
    "| concurrency | upstream p50 ms | via Gantry p50 ms | added p50 ms | upstream p99 ms "
    "| via Gantry p99 ms | upstream req/s | via Gantry req/s | errors |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


@dataclass(frozen=True)
class HedgeRun:
    name: str
    result: LoadResult
    upstream_calls: int

    def row(self) -> str:
        r = self.result
        extra = self.upstream_calls / max(1, r.requests + r.errors) - 1
        return (
            f"| {self.name} | {r.requests} | {r.p50:.1f} | {r.percentile(95):.1f} | "
            f"{r.p99:.1f} | {max(r.latencies_ms):.1f} | {extra:+.1%} | {r.errors} |"
        )


def registry_file(upstream_port: int) -> Path:
    """The bundled registry plus three models on the upstream (one embedder hedged)."""
    base = json.loads(resources.files("gantry").joinpath("models.json").read_text())
    url = f"http://127.0.0.1:{upstream_port}/v1"

    def remote(model_id: str, capabilities: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "id": model_id,
            "provider": "openai",
            "provider_model_id": model_id,
            "version": "bench",
            "context_window": 8192,
            "max_output_tokens": 512,
            "tokenizer": "llama3",
            "capabilities": capabilities,
            "provider_options": {"base_url": url},
            **extra,
        }

    base["models"] += [
        remote(REMOTE_CHAT, ["chat"]),
        remote(PLAIN_EMBED, ["embeddings"], embedding_dimensions=8),
        remote(
            HEDGED_EMBED,
            ["embeddings"],
            embedding_dimensions=8,
            hedging={"enabled": True, "delay_ms": 20},
        ),
    ]
    path = Path(tempfile.mkdtemp(prefix="gantry-bench-")) / "registry.json"
    path.write_text(json.dumps(base))
    return path


def upstream_calls(port: int) -> int:
    return int(httpx.get(f"http://127.0.0.1:{port}/stats").json()["received"])


def cpu_ms_per_request(gantry_port: int, pid: int, key: str, requests: int = 400) -> float:
    """Milliseconds of Gantry's CPU (its process alone) per proxied chat request."""
    body = {"model": REMOTE_CHAT, **CHAT}
    headers = {"Authorization": f"Bearer {key}", **NO_CACHE}
    with httpx.Client(base_url=f"http://127.0.0.1:{gantry_port}", headers=headers) as http:
        for _ in range(20):
            http.post("/v1/chat/completions", json=body)
        before = cpu_seconds(pid)
        for _ in range(requests):
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
        return (cpu_seconds(pid) - before) * 1000 / requests


def overhead_runs(
    gantry_port: int, upstream_port: int, key: str, seconds: float
) -> list[tuple[LoadResult, LoadResult]]:
    """(direct, through Gantry) per concurrency level, the same chat request."""
    direct = build_request(
        "/v1/chat/completions", json.dumps({"model": "upstream", **CHAT}).encode(), {}
    )
    gantry = build_request(
        "/v1/chat/completions",
        json.dumps({"model": REMOTE_CHAT, **CHAT}).encode(),
        {"Authorization": f"Bearer {key}", **NO_CACHE},
    )
    runs = []
    for concurrency in OVERHEAD_CONCURRENCY:
        runs.append(
            (
                run_load(upstream_port, direct, concurrency, seconds=seconds),
                run_load(gantry_port, gantry, concurrency, seconds=seconds),
            )
        )
    return runs


def hedge_runs(gantry_port: int, upstream_port: int, key: str, seconds: float) -> list[HedgeRun]:
    runs = []
    for name, model in (("hedging off", PLAIN_EMBED), ("hedging on", HEDGED_EMBED)):
        payload = build_request(
            "/v1/embeddings",
            json.dumps({"model": model, **EMBED}).encode(),
            {"Authorization": f"Bearer {key}", **NO_CACHE},
        )
        run_load(gantry_port, payload, HEDGE_CONCURRENCY, seconds=2.0, warmup=0.5)  # p95 known
        before = upstream_calls(upstream_port)
        result = run_load(gantry_port, payload, HEDGE_CONCURRENCY, seconds=seconds, warmup=0.0)
        runs.append(HedgeRun(name, result, upstream_calls(upstream_port) - before))
    return runs


@contextmanager
def _stack(
    server: Server,
    free_port: Callable[[], int],
    dynamodb_url: str,
    key: str,
    upstream_args: list[str],
) -> Iterator[tuple[int, int, int]]:
    python = sys.executable
    upstream_port, gantry_port = free_port(), free_port()
    command = [python, "-m", "gantry.local.upstream", "--port", str(upstream_port)]
    with server(command + upstream_args, upstream_port):
        registry = registry_file(upstream_port)
        gantry = [python, "-m", "bench.metering", "--port", str(gantry_port), "--key", key]
        gantry += ["--dynamodb", dynamodb_url]
        env = {"GANTRY_METERING": "off", "GANTRY_REGISTRY_PATH": str(registry)}
        with server(gantry, gantry_port, env) as process:
            yield gantry_port, upstream_port, process.pid


def provider_section(
    server: Server, free_port: Callable[[], int], dynamodb_url: str, key: str, seconds: float
) -> str:
    print("providers: OpenAI-compatible path vs the upstream directly ...", flush=True)
    with _stack(server, free_port, dynamodb_url, key, []) as (gantry_port, upstream_port, pid):
        overhead = overhead_runs(gantry_port, upstream_port, key, seconds)
        cpu_ms = cpu_ms_per_request(gantry_port, pid, key)
    print("providers: hedging against a long-tail upstream ...", flush=True)
    tail = [
        "--latency-ms",
        str(TAIL["latency_ms"]),
        "--tail-ms",
        str(TAIL["tail_ms"]),
        "--tail-share",
        str(TAIL["tail_share"]),
    ]
    with _stack(server, free_port, dynamodb_url, key, tail) as (gantry_port, upstream_port, _):
        hedging = hedge_runs(gantry_port, upstream_port, key, seconds)
    return render(overhead, cpu_ms, hedging, seconds)


def render(
    overhead: list[tuple[LoadResult, LoadResult]],
    cpu_ms: float,
    hedging: list[HedgeRun],
    seconds: float,
) -> str:
    rows = []
    for direct, gantry in overhead:
        rows.append(
            f"| {direct.concurrency} | {direct.p50:.2f} | {gantry.p50:.2f} | "
            f"**{gantry.p50 - direct.p50:.2f}** | {direct.p99:.2f} | {gantry.p99:.2f} | "
            f"{direct.rps:,.0f} | {gantry.rps:,.0f} | {direct.errors + gantry.errors} |"
        )
    single = overhead[0]
    added = single[1].p50 - single[0].p50
    verdict = "met" if added < 2.0 else "missed"
    off, on = hedging
    gain = off.result.p99 - on.result.p99
    median_change = statistics.median(on.result.latencies_ms) - statistics.median(
        off.result.latencies_ms
    )
    return f"""## Remote providers: the OpenAI-compatible path

`POST /v1/chat/completions` on a model served by an OpenAI-compatible upstream (the project's
`gantry.local.upstream`, answering at once, in its own process), measured directly against
the upstream and through Gantry (authentication on, metering off), closed-loop keep-alive
connections, {seconds:.0f} s per level. "Added" is Gantry's p50 minus the upstream's own:
authentication, planning with exact Llama 3 token counting, the resilience rules, the pooled
HTTP/1.1 client (blocking on the worker thread, abortable from any other), parsing and the
response. Target: under 2 ms at p50 at concurrency 1 ({verdict}: {added:.2f} ms).

{OVERHEAD_HEADER}
{chr(10).join(rows)}

Gantry's own CPU per proxied request (its process alone, 400 sequential requests):
**{cpu_ms:.2f} ms**, most of it on the event loop (uvicorn's HTTP/1.1 parsing, FastAPI, the
middleware, authentication, planning); the upstream call on the worker thread (httpcore,
parsing) is the smaller part. At concurrency 16 the server, the upstream and the load
generator share two cores, so that CPU sets the throughput and queueing sets the p50; with
a real model server the model's own latency (tens to hundreds of milliseconds per call)
dominates.

## Remote providers: hedging against a long tail

`POST /v1/embeddings` at concurrency {HEDGE_CONCURRENCY} on an upstream that answers in
{TAIL["latency_ms"]:.0f} ms except {TAIL["tail_share"]:.0%} of calls, which take
{TAIL["tail_ms"]:.0f} ms. The same upstream serves two registry entries, one with hedging
on: a second call goes out when the first is slower than the recent p95 of this backend
(after a short warm-up that fills the latency window), the first answer wins, the other is
cancelled. "Extra calls" is the upstream load hedging adds.

| embeddings | requests | p50 ms | p95 ms | p99 ms | max ms | extra calls | errors |
|---|---:|---:|---:|---:|---:|---:|---:|
{off.row()}
{on.row()}

Hedging cut p99 by {gain:.1f} ms (p50 moved by {median_change:+.1f} ms).
"""
