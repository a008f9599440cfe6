"""Batches: OpenAI's batch API. States, the record, the input lines and the output format.

A batch moves `validating -> in_progress -> finalizing -> completed`; it ends `failed` when
its input is unusable, `expired` when its completion window closes first, and
`cancelling -> cancelled` when its owner cancels it. Everything here is pure.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gantry.domain.errors import InvalidRequest
from gantry.domain.files import BATCH_ENDPOINTS, json_lines

VALIDATING = "validating"
IN_PROGRESS = "in_progress"
FINALIZING = "finalizing"
COMPLETED = "completed"
FAILED = "failed"
EXPIRED = "expired"
CANCELLING = "cancelling"
CANCELLED = "cancelled"
RUNNING = (VALIDATING, IN_PROGRESS, FINALIZING, CANCELLING)
CANCELLABLE = (VALIDATING, IN_PROGRESS)
TERMINAL = (COMPLETED, FAILED, EXPIRED, CANCELLED)
STATUSES = (*RUNNING, *TERMINAL)
# The timestamp field each status sets when the batch enters it.
ENTERED_AT = {
    IN_PROGRESS: "in_progress_at",
    FINALIZING: "finalizing_at",
    COMPLETED: "completed_at",
    FAILED: "failed_at",
    EXPIRED: "expired_at",
    CANCELLING: "cancelling_at",
    CANCELLED: "cancelled_at",
}

ENDPOINTS = BATCH_ENDPOINTS
COMPLETION_WINDOWS = {"24h": 86_400}
MAX_REQUESTS = 50_000
# Suggested seconds between polls while a batch runs (Retry-After).
POLL_SECONDS = {VALIDATING: 2, IN_PROGRESS: 10, FINALIZING: 2, CANCELLING: 2}
_BATCH_ID = re.compile(r"^batch_[A-Za-z0-9]{8,64}$")

EXPIRED_LINE = (
    "batch_expired",
    "This request could not be executed before the completion window expired.",
)
CANCELLED_LINE = ("batch_cancelled", "This request was not executed: the batch was cancelled.")
FAILED_LINE = ("batch_failed", "This request was not executed: the batch failed before it ran.")


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def is_batch_id(value: str) -> bool:
    return bool(_BATCH_ID.match(value))


def request_id(batch_id: str, line: int) -> str:
    """The id each line's request runs (and is billed) under: the same on every attempt,
    so a line that runs again after a worker failure is not billed twice."""
    return f"batch_req_{batch_id.removeprefix('batch_')}_{line}"


def validate_endpoint(endpoint: str) -> str:
    if endpoint not in ENDPOINTS:
        raise InvalidRequest(
            f"Invalid 'endpoint': '{endpoint}'. Batches run {', '.join(ENDPOINTS)}.",
            code="invalid_value",
            param="endpoint",
        )
    return endpoint


def window_seconds(completion_window: str) -> int:
    seconds = COMPLETION_WINDOWS.get(completion_window)
    if seconds is None:
        raise InvalidRequest(
            f"Invalid 'completion_window': '{completion_window}'. Use "
            f"{', '.join(repr(w) for w in COMPLETION_WINDOWS)}.",
            code="invalid_value",
            param="completion_window",
        )
    return seconds


@dataclass(frozen=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


@dataclass(frozen=True)
class LineError:
    """One reason a batch failed validation (OpenAI's `errors.data[]`)."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True)
class Chunk:
    """The input file's requests at positions `start` (inclusive) to `end` (exclusive)."""

    index: int
    start: int
    end: int

    def as_dict(self) -> dict[str, int]:
        return {"index": self.index, "start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Chunk:
        return cls(int(raw["index"]), int(raw["start"]), int(raw["end"]))


def chunks(requests: int, size: int) -> list[Chunk]:
    return [
        Chunk(index, start, min(start + size, requests))
        for index, start in enumerate(range(0, requests, size))
    ]


@dataclass(frozen=True)
class Batch:
    id: str
    org_id: str
    key_id: str  # requests run as this key, with its scopes and limits
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: float
    expires_at: float  # the end of the completion window
    retain_until: float  # the record's deletion time (TTL)
    status: str = VALIDATING
    metadata: dict[str, str] = field(default_factory=dict)
    request_counts: RequestCounts = field(default_factory=RequestCounts)
    errors: tuple[LineError, ...] = ()
    output_file_id: str | None = None
    error_file_id: str | None = None
    execution_id: str | None = None
    chunk_count: int = 0
    times: dict[str, float] = field(default_factory=dict)  # ENTERED_AT field -> time

    @property
    def running(self) -> bool:
        return self.status in RUNNING

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": (
                {"object": "list", "data": [e.as_dict() for e in self.errors]}
                if self.errors
                else None
            ),
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "expires_at": int(self.expires_at),
        }
        for name in ENTERED_AT.values():
            at = self.times.get(name)
            body[name] = int(at) if at is not None else None
        body["request_counts"] = self.request_counts.as_dict()
        body["metadata"] = self.metadata or None
        return body

    def with_status(self, status: str, at: float, **changes: Any) -> Batch:
        return replace(self, status=status, times={**self.times, ENTERED_AT[status]: at}, **changes)


def retry_after(batch: Batch) -> int | None:
    return POLL_SECONDS.get(batch.status)


@dataclass(frozen=True)
class BatchLine:
    line: int
    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


def read_lines(data: bytes) -> list[BatchLine]:
    """The requests of a batch input file. Upload validation already checked each line's
    shape (unique custom_id, POST, a batch url, a body object), so this only parses, line
    by line exactly as the upload did."""
    return [
        BatchLine(
            number,
            str(value["custom_id"]),
            str(value.get("method", "POST")),
            str(value["url"]),
            dict(value["body"]),
        )
        for number, value in json_lines(data)
    ]


def write_lines(lines: Sequence[BatchLine]) -> bytes:
    """A chunk's requests as JSONL, each with its line number in the input file."""
    rows = (
        json.dumps(
            {
                "line": line.line,
                "custom_id": line.custom_id,
                "method": line.method,
                "url": line.url,
                "body": line.body,
            },
            separators=(",", ":"),
        )
        for line in lines
    )
    return ("\n".join(rows) + "\n").encode()


def read_chunk(data: bytes) -> list[BatchLine]:
    return [
        BatchLine(int(v["line"]), v["custom_id"], v["method"], v["url"], v["body"])
        for _, v in json_lines(data)
    ]


def check_lines(lines: Sequence[BatchLine], endpoint: str) -> list[LineError]:
    """Why these lines cannot run as a batch for `endpoint` (empty when they can)."""
    errors: list[LineError] = []
    if not lines:
        errors.append(LineError("empty_file", "The input file holds no requests."))
    if len(lines) > MAX_REQUESTS:
        errors.append(
            LineError(
                "too_many_requests",
                f"The input file holds {len(lines)} requests; a batch holds at most "
                f"{MAX_REQUESTS}.",
            )
        )
    for line in lines:
        if line.url != endpoint:
            errors.append(
                LineError(
                    "mismatched_endpoint",
                    f"The request's url '{line.url}' differs from the batch's endpoint "
                    f"'{endpoint}'.",
                    "url",
                    line.line,
                )
            )
        if line.body.get("stream"):
            errors.append(
                LineError(
                    "unsupported_parameter",
                    "'stream' is not supported in a batch: remove it or set it to false.",
                    "body.stream",
                    line.line,
                )
            )
        if len(errors) >= 100:  # enough to fix the file; the rest would only repeat
            break
    return errors


@dataclass(frozen=True)
class LineResult:
    """What running one line gave: the HTTP status, the request id and the response body."""

    status_code: int
    request_id: str
    body: dict[str, Any]
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


def output_line(line: BatchLine, result: LineResult) -> dict[str, Any]:
    """A line of the output file (successes) or of the error file (failed requests)."""
    return {
        "id": result.request_id,
        "custom_id": line.custom_id,
        "response": {
            "status_code": result.status_code,
            "request_id": result.request_id,
            "body": result.body,
        },
        "error": None,
    }


def unrun_line(line: BatchLine, request: str, reason: tuple[str, str]) -> dict[str, Any]:
    """A line of the error file for a request that never ran (expired or cancelled)."""
    code, message = reason
    return {
        "id": request,
        "custom_id": line.custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def final_status(batch: Batch, unrun: int, run_failed: bool = False) -> str:
    """How a batch ends once its chunks ran (or the run stopped)."""
    if batch.status == CANCELLING:
        return CANCELLED
    if run_failed:
        return FAILED
    if unrun:
        return EXPIRED
    return COMPLETED
