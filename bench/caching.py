"""Response cache and compression: latency of a cache hit against a miss on a provider of
fixed latency, and bytes on the wire for a large embeddings response with and without
compression. Runs its own local server (moto for DynamoDB), metering off."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import httpx

PROMPT_TOKENS = 10  # gantry-echo-paced echoes them back at 20 ms per token
REPEATS = 40
EMBED_INPUTS = 200


@dataclass
class CacheFigures:
    miss_ms: list[float]
    hit_ms: list[float]
    provider_ms: float


@dataclass
class WireFigures:
    inputs: int
    identity: int
    gzip: int
    br: int


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _word(number: int) -> str:
    letters = ""
    number += 1
    while number:
        number, digit = divmod(number - 1, 26)
        letters = chr(97 + digit) + letters
    return "q" + letters


def _chat(number: int) -> dict[str, object]:
    # One word token each: a distinct first word, then common words.
    words = " ".join([_word(number), *(["rain"] * (PROMPT_TOKENS - 1))])
    return {
        "model": "gantry-echo-paced",
        "messages": [{"role": "user", "content": words}],
        "temperature": 0,
    }


def _timed(client: httpx.Client, body: dict[str, object], expect: str) -> float:
    started = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200 or response.headers.get("x-cache-status") != expect:
        raise RuntimeError(f"unexpected answer: {response.status_code} {response.text[:200]}")
    return elapsed


def measure_cache(client: httpx.Client) -> CacheFigures:
    misses, hits = [], []
    for number in range(REPEATS):
        body = _chat(number)
        misses.append(_timed(client, body, "MISS"))
        hits.append(_timed(client, body, "HIT"))
    return CacheFigures(misses, hits, provider_ms=20.0 * PROMPT_TOKENS)


def measure_wire(client: httpx.Client) -> WireFigures:
    inputs = [f"sentence number {i} about the weather in the hills" for i in range(EMBED_INPUTS)]
    body = {"model": "gantry-embed-small", "input": inputs}
    sizes: dict[str, int] = {}
    for encoding in ("identity", "gzip", "br"):
        headers = {"Accept-Encoding": encoding, "Cache-Control": "no-store"}
        with client.stream("POST", "/v1/embeddings", json=body, headers=headers) as response:
            raw = b"".join(response.iter_raw())
        if response.status_code != 200:
            raise RuntimeError(f"embeddings failed: {response.status_code}")
        sizes[encoding] = len(raw)
    return WireFigures(EMBED_INPUTS, sizes["identity"], sizes["gzip"], sizes["br"])


def measure() -> tuple[CacheFigures, WireFigures]:
    from gantry.local.server import BackgroundServer

    saved = dict(os.environ)
    os.environ["GANTRY_METERING"] = "off"
    try:
        with BackgroundServer() as server:
            assert server.stack is not None
            headers = {"Authorization": f"Bearer {server.stack.admin_key}"}
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
                client.post("/v1/chat/completions", json=_chat(10_000))  # warm up
                return measure_cache(client), measure_wire(client)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def section(cache: CacheFigures, wire: WireFigures) -> str:
    miss50, hit50 = statistics.median(cache.miss_ms), statistics.median(cache.hit_ms)
    rows = "\n".join(
        f"| {name} | {statistics.median(values):.1f} | {_p(values, 99):.1f} |"
        for name, values in (("miss (provider runs)", cache.miss_ms), ("hit", cache.hit_ms))
    )
    return f"""## Response cache: a hit against a miss

`POST /v1/chat/completions` on `gantry-echo-paced` with `temperature: 0` and a prompt of
{PROMPT_TOKENS} tokens, which the model echoes at 20 ms per token: a miss spends about
{cache.provider_ms:.0f} ms in the provider. Each of {REPEATS} distinct prompts is sent twice in
a row (MISS, then HIT) to a local server, metering off; the cache lookup and the cache write
go to the local DynamoDB emulator, one request at a time.

| request | p50 ms | p99 ms |
|---|---:|---:|
{rows}

A hit answers in {hit50:.1f} ms at the median, {miss50 / hit50:.0f}x faster than a miss
({miss50:.1f} ms). The lookup runs alongside admission and the write alongside settlement, so
a miss pays no extra round trip for the cache.

## Compression: bytes on the wire

`POST /v1/embeddings` with {wire.inputs} inputs (256 floats each), the same response read raw
with each `Accept-Encoding`:

| encoding | bytes | share of identity |
|---|---:|---:|
| identity | {wire.identity:,} | 1.00 |
| gzip | {wire.gzip:,} | {wire.gzip / wire.identity:.2f} |
| br | {wire.br:,} | {wire.br / wire.identity:.2f} |
"""


def main() -> int:
    cache, wire = measure()
    print(section(cache, wire))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
