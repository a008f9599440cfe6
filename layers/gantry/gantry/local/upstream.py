"""A small OpenAI-compatible server on loopback, with faults on demand.

It answers `/v1/chat/completions`, `/v1/completions` (buffered or streamed as SSE),
`/v1/embeddings` and `/v1/moderations` the way vLLM or OpenAI would, echoing the prompt's
words back. Each request takes the next scripted `Behaviour` (or the default one), which can
delay the answer, fail with any status and body, reset the connection, send malformed
output, or cut a stream short. It records every request and every client that hung up early,
so tests can prove a call was cancelled. For tests, benchmarks and trying the
OpenAI-compatible provider without a model server:

    python -m gantry.local.upstream --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0  # before the response starts
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # replaces the whole response body (malformed output, errors)
    reset: bool = False  # drop the connection (TCP reset) instead of answering
    chunk_delay: float = 0.0  # between streamed tokens
    die_after: int | None = None  # streams: reset the connection after this many tokens
    error_after: int | None = None  # streams: an error event after this many tokens
    finish_reason: str | None = None  # instead of "stop"/"length"
    usage: bool = True  # report usage (buffered body, final stream chunk)


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def words(text: str) -> list[str]:
    return text.split()


class Upstream:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: Callable[[], float] | None = None,
        record: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.latency = latency
        self.default = Behaviour()
        self.script: deque[Behaviour] = deque()
        self.requests: list[Seen] = []
        self.disconnects = 0
        self.completed = 0
        self.received = 0
        self._record = record
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def queue(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self.script.extend(behaviours)

    def __enter__(self) -> Upstream:
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the upstream server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._server = loop.run_until_complete(asyncio.start_server(self._serve, sock=sock))
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def serve_forever(self) -> None:
        self._run()

    # --- HTTP ----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                keep = await self._answer(request, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _next(self) -> Behaviour:
        with self._lock:
            behaviour = self.script.popleft() if self.script else self.default
        if self.latency is not None:
            behaviour = Behaviour(
                **{**behaviour.__dict__, "delay": behaviour.delay + self.latency()}
            )
        return behaviour

    async def _answer(
        self, request: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        path, body = request.path, request.body
        if path == "/health" or path.endswith("/models"):
            _respond(writer, 200, b'{"object":"list","data":[]}')
            return True
        if path == "/stats":
            stats = {"received": self.received, "completed": self.completed}
            _respond(writer, 200, json.dumps({**stats, "disconnects": self.disconnects}).encode())
            return True
        behaviour = self._next()
        with self._lock:
            self.received += 1
        if self._record:
            with self._lock:
                self.requests.append(request)
        if behaviour.delay and not await self._wait(reader, behaviour.delay):
            return False
        if behaviour.reset:
            _reset(writer)
            return False
        if behaviour.body is not None or behaviour.status >= 400:
            body_bytes = behaviour.body if behaviour.body is not None else _error(behaviour.status)
            self._done()  # counted before the client can see the answer
            _respond(writer, behaviour.status, body_bytes, behaviour.headers)
            return True
        if body.get("stream"):
            return await self._stream(path, body, behaviour, reader, writer)
        self._done()
        _respond(writer, 200, json.dumps(_payload(path, body, behaviour)).encode())
        return True

    def _done(self) -> None:
        with self._lock:
            self.completed += 1

    async def _wait(self, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Sleep, unless the client hangs up first (then False, and it is counted)."""
        eof = asyncio.ensure_future(reader.read(1))
        try:
            done, _ = await asyncio.wait({eof}, timeout=seconds)
        finally:
            if not eof.done():
                eof.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await eof
        if done:
            with self._lock:
                self.disconnects += 1
            return False
        return True

    async def _stream(
        self,
        path: str,
        body: dict[str, Any],
        behaviour: Behaviour,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        chat = path.endswith("/chat/completions")
        prompt, reply, limit = _reply(body)
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            "transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        writer.write(head.encode())
        base = {"id": "cmpl-upstream", "created": int(time.time()), "model": body.get("model")}
        base["object"] = "chat.completion.chunk" if chat else "text_completion"
        n = int(body.get("n") or 1)
        for index in range(n):
            if chat:
                _event(writer, {**base, "choices": [_delta(index, {"role": "assistant"}, None)]})
            for number, word in enumerate(reply):
                if behaviour.die_after is not None and number >= behaviour.die_after:
                    await writer.drain()
                    _reset(writer)
                    return False
                if behaviour.error_after is not None and number >= behaviour.error_after:
                    _event(
                        writer, {"error": {"message": "upstream failure", "type": "server_error"}}
                    )
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    return True
                text = word if number == 0 else " " + word
                piece = _delta(index, {"content": text}, None) if chat else _text(index, text, None)
                _event(writer, {**base, "choices": [piece]})
                await writer.drain()
                if behaviour.chunk_delay and not await self._wait(reader, behaviour.chunk_delay):
                    return False
            reason = behaviour.finish_reason or ("length" if len(reply) >= limit else "stop")
            end = _delta(index, {}, reason) if chat else _text(index, "", reason)
            _event(writer, {**base, "choices": [end]})
        if behaviour.usage and (body.get("stream_options") or {}).get("include_usage"):
            _event(writer, {**base, "choices": [], "usage": _usage(prompt, len(reply) * n)})
        self._done()
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        return True


async def _read_request(reader: asyncio.StreamReader) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    raw = await reader.readexactly(length) if length else b""
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    return Seen(path, body if isinstance(body, dict) else {}, headers)


def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    )
    writer.write(head.encode() + body)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
    writer.write(_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n"))


def _delta(index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish}


def _text(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": finish}


def _error(status: int) -> bytes:
    kind = "rate_limit_error" if status == 429 else "server_error"
    return json.dumps({"error": {"message": f"upstream status {status}", "type": kind}}).encode()


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _reply(body: dict[str, Any]) -> tuple[int, list[str], int]:
    """(prompt words, reply words, max tokens): the reply echoes the last prompt text."""
    limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
    if "messages" in body:
        texts = [str(m.get("content") or "") for m in body["messages"] if isinstance(m, dict)]
    else:
        texts = [str(body.get("prompt") or "")]
    prompt = sum(len(words(t)) for t in texts)
    return prompt, words(texts[-1] if texts else "")[:limit], limit


def _payload(path: str, body: dict[str, Any], behaviour: Behaviour) -> dict[str, Any]:
    base = {"id": "cmpl-upstream", "created": int(time.time()), "model": body.get("model")}
    if path.endswith("/embeddings"):
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(str(text))}
            for i, text in enumerate(items)
        ]
        tokens = sum(len(words(str(t))) for t in items)
        payload: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
        if behaviour.usage:
            payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return payload
    if path.endswith("/moderations"):
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        results = [_moderation(str(text)) for text in items]
        return {"id": "modr-upstream", "model": body.get("model"), "results": results}
    prompt, reply, limit = _reply(body)
    n = int(body.get("n") or 1)
    text = " ".join(reply)
    reason = behaviour.finish_reason or ("length" if len(reply) >= limit else "stop")
    if path.endswith("/chat/completions"):
        message = {"role": "assistant", "content": text}
        choices = [
            {"index": i, "message": message, "finish_reason": reason, "logprobs": None}
            for i in range(n)
        ]
        payload = {**base, "object": "chat.completion", "choices": choices}
    else:
        choices = [{"index": i, "text": text, "finish_reason": reason} for i in range(n)]
        payload = {**base, "object": "text_completion", "choices": choices}
    if behaviour.usage:
        payload["usage"] = _usage(prompt, len(reply) * n)
    return payload


def _vector(text: str, size: int = 8) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [b - 127.5 for b in digest[:size]]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def _moderation(text: str) -> dict[str, Any]:
    flagged = "attack" in text.lower()
    return {
        "flagged": flagged,
        "categories": {"violence": flagged, "hate": False},
        "category_scores": {"violence": 0.9 if flagged else 0.01, "hate": 0.0},
    }


def long_tail(base_ms: float, tail_ms: float, share: float, seed: int) -> Callable[[], float]:
    """Latencies of `base_ms`, except a `share` of them at `tail_ms` (seconds out)."""
    rng = random.Random(seed)
    return lambda: (tail_ms if rng.random() < share else base_ms) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    parser.add_argument("--tail-ms", type=float, default=0.0, help="latency of the slow share")
    parser.add_argument("--tail-share", type=float, default=0.0, help="share of slow answers")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    latency = None
    if args.latency_ms or args.tail_share:
        latency = long_tail(args.latency_ms, args.tail_ms, args.tail_share, args.seed)
    upstream = Upstream(args.host, args.port, latency=latency, record=False)
    print(f"OpenAI-compatible upstream on http://{args.host}:{args.port}/v1", flush=True)
    upstream.serve_forever()


if __name__ == "__main__":
    main()
