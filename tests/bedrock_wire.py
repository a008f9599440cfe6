"""A fake Bedrock endpoint at botocore's send step.

Requests are serialised, validated and signed by botocore as for the real service; the
scripted responses are HTTP bytes (JSON bodies, error headers, binary event streams) that
botocore parses as it would Bedrock's, including exception events inside ConverseStream.
Shapes follow the Bedrock Runtime API reference.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        bytes([len(raw_name)])
        + raw_name
        + bytes([7])
        + struct.pack(">H", len(raw_value))
        + raw_value
    )


def _message(headers: dict[str, str], payload: bytes) -> bytes:
    encoded = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(kind: str, body: dict[str, Any]) -> bytes:
    headers = {":message-type": "event", ":event-type": kind, ":content-type": "application/json"}
    return _message(headers, json.dumps(body).encode())


def exception_event(kind: str, message: str) -> bytes:
    headers = {
        ":message-type": "exception",
        ":exception-type": kind,
        ":content-type": "application/json",
    }
    return _message(headers, json.dumps({"message": message}).encode())


class _Raw:
    """What botocore reads a response body from; `fail` raises after the chunks (a
    connection that died)."""

    def __init__(self, chunks: list[bytes], fail: Exception | None = None) -> None:
        self._chunks = chunks
        self._fail = fail
        self._read = False

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        yield from self._chunks
        if self._fail is not None:
            raise self._fail

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        if self._read:
            return b""
        self._read = True
        return b"".join(self._chunks)

    def close(self) -> None:
        return None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None  # an event stream
    fail: Exception | None = None  # raised while the stream is read
    raise_: Exception | None = None  # raised instead of answering (connection failures)


def ok(body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        200, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})}
    )


def error(code: str, message: str, status: int) -> Reply:
    return Reply(
        status,
        json.dumps({"message": message}).encode(),
        {
            "content-type": "application/json",
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/",
        },
    )


def stream(*chunks: bytes, fail: Exception | None = None) -> Reply:
    return Reply(
        200, b"", {"content-type": "application/vnd.amazon.eventstream"}, list(chunks), fail
    )


def converse_body(
    text: str,
    stop: str = "end_turn",
    input_tokens: int = 11,
    output_tokens: int = 5,
    trace: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop,
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": 120},
    }
    if trace is not None:
        body["trace"] = trace
    return body


def stream_events(
    pieces: list[str],
    stop: str = "end_turn",
    input_tokens: int = 11,
    output_tokens: int | None = None,
) -> list[bytes]:
    events = [event("messageStart", {"role": "assistant"})]
    for piece in pieces:
        events.append(
            event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0})
        )
    events.append(event("contentBlockStop", {"contentBlockIndex": 0}))
    events.append(event("messageStop", {"stopReason": stop}))
    out = len(pieces) if output_tokens is None else output_tokens
    usage = {"inputTokens": input_tokens, "outputTokens": out, "totalTokens": input_tokens + out}
    events.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 90}}))
    return events


@dataclass
class Seen:
    operation: str
    url: str
    body: dict[str, Any]


class BedrockWire:
    def __init__(self) -> None:
        self.client = boto3.session.Session().client(
            "bedrock-runtime",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}),
        )
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.client.meta.events.register("before-send.bedrock-runtime", self._send)

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def _send(self, request: Any, **kwargs: Any) -> AWSResponse:
        url = str(request.url)
        operation = url.rsplit("/", 1)[-1]
        body = json.loads(request.body) if request.body else {}
        self.requests.append(Seen(operation, url, body))
        if not self.replies:
            raise AssertionError(f"unexpected Bedrock call: {operation}")
        reply = self.replies.popleft()
        if reply.raise_ is not None:
            raise reply.raise_
        chunks = reply.chunks if reply.chunks is not None else [reply.body]
        return AWSResponse(url, reply.status, reply.headers, _Raw(chunks, reply.fail))
