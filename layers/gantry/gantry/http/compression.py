"""Response compression (pure ASGI): brotli or gzip by `Accept-Encoding`, for responses of
at least `MIN_COMPRESS_BYTES`, with `Vary: Accept-Encoding`. Server-sent events are never
compressed or held back: each frame must reach the client the moment it is written.

Behind API Gateway's buffered Lambda proxy (Mangum, which marks the scope with
`aws.event`) nothing is compressed here: API Gateway compresses those responses itself
(`minimumCompressionSize`, the same threshold), and a compressed body would need binary
media types. Streaming routes (API Gateway's STREAM mode, which does no content encoding)
and the local server compress here.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Protocol

import brotli
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Kept equal to the REST API's minimum_compression_size (an infra test checks it).
MIN_COMPRESS_BYTES = 1024
BROTLI_QUALITY = 5
GZIP_LEVEL = 6
_COMPRESSIBLE = ("application/json", "text/", "+json", "application/javascript", "xml")
_NEVER = ("text/event-stream",)


def negotiate(accept_encoding: str | None) -> str | None:
    """`br` or `gzip` (the client's highest q; brotli on a tie), or None."""
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[name] = q
    wildcard = weights.get("*", 0.0)
    best, best_q = None, 0.0
    for name in ("br", "gzip"):
        q = weights.get(name, wildcard)
        if q > best_q:
            best, best_q = name, q
    return best


def compressible(content_type: str) -> bool:
    lowered = content_type.lower()
    if any(kind in lowered for kind in _NEVER):
        return False
    return any(kind in lowered for kind in _COMPRESSIBLE)


def compress(body: bytes, encoding: str) -> bytes:
    if encoding == "br":
        return bytes(brotli.compress(body, quality=BROTLI_QUALITY))
    return gzip.compress(body, compresslevel=GZIP_LEVEL)


class _Stream(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def end(self) -> bytes: ...


class _GzipStream:
    def __init__(self) -> None:
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def feed(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class _BrotliStream:
    def __init__(self) -> None:
        self._c = brotli.Compressor(quality=BROTLI_QUALITY)

    def feed(self, data: bytes) -> bytes:
        return bytes(self._c.process(data)) + bytes(self._c.flush())

    def end(self) -> bytes:
        return bytes(self._c.finish())


def _stream(encoding: str) -> _Stream:
    return _BrotliStream() if encoding == "br" else _GzipStream()


class CompressionMiddleware:
    def __init__(self, app: ASGIApp, minimum_size: int = MIN_COMPRESS_BYTES) -> None:
        self.app = app
        self.minimum_size = minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "aws.event" in scope:
            await self.app(scope, receive, send)
            return
        encoding = negotiate(Headers(scope=scope).get("accept-encoding"))
        await self.app(scope, receive, _Responder(send, encoding, self.minimum_size).send)


class _Responder:
    """Holds the response start until it knows whether the body is compressed."""

    def __init__(self, send: Send, encoding: str | None, minimum_size: int) -> None:
        self._send = send
        self._encoding = encoding
        self._minimum = minimum_size
        self._start: Message | None = None
        self._passthrough = False
        self._held: list[bytes] = []
        self._stream: _Stream | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._on_start(message)
        elif message["type"] == "http.response.body" and not self._passthrough:
            await self._on_body(message)
        else:
            await self._send(message)

    async def _on_start(self, message: Message) -> None:
        headers = MutableHeaders(raw=list(message.get("headers", [])))
        eligible = (
            compressible(headers.get("content-type", "")) and "content-encoding" not in headers
        )
        if eligible:
            headers.add_vary_header("Accept-Encoding")
        message["headers"] = headers.raw
        if not eligible or self._encoding is None or message.get("status", 200) in (204, 304):
            self._passthrough = True
            await self._send(message)
            return
        self._start = message

    async def _on_body(self, message: Message) -> None:
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        assert self._start is not None and self._encoding is not None
        if self._stream is not None:
            data = self._stream.feed(body) if body else b""
            if not more:
                data += self._stream.end()
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
            return
        self._held.append(body)
        size = sum(len(chunk) for chunk in self._held)
        if not more:
            whole = b"".join(self._held)
            if size < self._minimum:
                await self._send(self._start)
                await self._send({"type": "http.response.body", "body": whole})
                return
            compressed = compress(whole, self._encoding)
            headers = self._encoded_headers()
            headers["content-length"] = str(len(compressed))
            await self._send(self._start)
            await self._send({"type": "http.response.body", "body": compressed})
            return
        if size >= self._minimum:  # a long body in parts: compress it as it comes
            self._stream = _stream(self._encoding)
            headers = self._encoded_headers()
            del headers["content-length"]
            await self._send(self._start)
            data = self._stream.feed(b"".join(self._held))
            self._held = []
            await self._send({"type": "http.response.body", "body": data, "more_body": True})

    def _encoded_headers(self) -> MutableHeaders:
        assert self._start is not None and self._encoding is not None
        headers = MutableHeaders(scope=self._start)
        headers["content-encoding"] = self._encoding
        return headers
