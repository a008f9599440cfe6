"""A small closed-loop HTTP/1.1 load generator: C keep-alive connections, each sending the
next request as soon as the previous response arrives. Raw asyncio sockets keep the client's
own cost low, so the server under test is what the figures measure."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: tuple[float, ...]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99(self) -> float:
        return self.percentile(99)


def build_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    if length:
        await reader.readexactly(length)
    return status


async def _worker(
    port: int, payload: bytes, stop_at: float, warm_until: float, sink: list[float], bad: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(payload)
            status = await _read_response(reader)
            done = time.perf_counter()
            if done < warm_until:
                continue
            if status == 200:
                sink.append((done - started) * 1000)
            else:
                bad.append(status)
    finally:
        writer.close()


async def _run(
    port: int, payload: bytes, concurrency: int, seconds: float, warmup: float
) -> LoadResult:
    begin = time.perf_counter()
    warm_until = begin + warmup
    stop_at = warm_until + seconds
    latencies: list[float] = []
    errors: list[int] = []
    await asyncio.gather(
        *(
            _worker(port, payload, stop_at, warm_until, latencies, errors)
            for _ in range(concurrency)
        )
    )
    measured = max(1e-9, time.perf_counter() - warm_until)
    return LoadResult(concurrency, len(latencies), len(errors), measured, tuple(latencies))


def run_load(
    port: int, payload: bytes, concurrency: int, seconds: float = 5.0, warmup: float = 1.0
) -> LoadResult:
    return asyncio.run(_run(port, payload, concurrency, seconds, warmup))
