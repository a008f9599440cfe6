"""Streaming overhead: how much later than the provider's own timing chunks reach a client.

`gantry-echo-paced` produces one token every 20 ms, so a perfect server delivers the first
content chunk 20 ms after the request and every next one 20 ms after the previous. The
figures are the server's additions to that: time to first chunk minus 20 ms, and each gap
between chunks minus 20 ms. A gap under 2 ms means two tokens reached the client in one
burst, i.e. they were coalesced somewhere on the path.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from dataclasses import dataclass, field

PACE_MS = 20.0
PROMPT = " ".join(["word"] * 24)  # 24 tokens to echo back


@dataclass
class StreamStats:
    concurrency: int
    streams: int = 0
    errors: int = 0
    ttft_extra_ms: list[float] = field(default_factory=list)
    gap_extra_ms: list[float] = field(default_factory=list)
    coalesced: int = 0
    chunks: int = 0

    @staticmethod
    def _p(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]

    def row(self) -> str:
        ttft, gaps = self.ttft_extra_ms, self.gap_extra_ms
        return (
            f"| {self.concurrency} | {self.streams} | "
            f"{statistics.median(ttft):.2f} | {self._p(ttft, 99):.2f} | "
            f"{statistics.median(gaps):.2f} | {self._p(gaps, 99):.2f} | "
            f"{self.coalesced} of {self.chunks} | {self.errors} |"
        )


def _request(key: str) -> bytes:
    body = json.dumps(
        {
            "model": "gantry-echo-paced",
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
        }
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _one_stream(port: int, payload: bytes, stats: StreamStats) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sent = time.perf_counter()
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            stats.errors += 1
            return
        arrivals: list[float] = []
        buffer = b""
        while True:
            line = await reader.readline()  # chunked encoding: size line, data, blank
            if not line:
                break
            buffer += line
            if b'"content":"' in line and b'"content":""' not in line:
                arrivals.append(time.perf_counter())
            if b"[DONE]" in line:
                break
        if not arrivals:
            stats.errors += 1
            return
        stats.streams += 1
        stats.ttft_extra_ms.append((arrivals[0] - sent) * 1000 - PACE_MS)
        for before, after in itertools.pairwise(arrivals):
            gap = (after - before) * 1000
            stats.gap_extra_ms.append(gap - PACE_MS)
            stats.chunks += 1
            if gap < 2.0:
                stats.coalesced += 1
    finally:
        writer.close()


async def _run(port: int, key: str, concurrency: int, seconds: float) -> StreamStats:
    stats = StreamStats(concurrency)
    payload = _request(key)
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            await _one_stream(port, payload, stats)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


def measure_streams(port: int, key: str, concurrency: int, seconds: float) -> StreamStats:
    return asyncio.run(_run(port, key, concurrency, seconds))


HEADER = (
    "| concurrent streams | streams | first chunk +ms p50 | p99 | gap +ms p50 | p99 "
    "| coalesced gaps | errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
)
