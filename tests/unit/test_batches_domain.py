"""Batch rules that need no AWS: chunking, line checks, the final status, the wire shape."""

from __future__ import annotations

import pytest

from gantry.domain.batches import (
    CANCELLED,
    CANCELLING,
    COMPLETED,
    EXPIRED,
    FINALIZING,
    Batch,
    BatchLine,
    Chunk,
    check_lines,
    chunks,
    final_status,
    read_chunk,
    read_lines,
    request_id,
    window_seconds,
    write_lines,
)
from gantry.domain.errors import InvalidRequest

CHAT = "/v1/chat/completions"


def batch(status: str = FINALIZING) -> Batch:
    return Batch(
        id="batch_0123456789abcdef",
        org_id="org",
        key_id="key",
        endpoint=CHAT,
        input_file_id="file-0123456789",
        completion_window="24h",
        created_at=1000.0,
        expires_at=1000.0 + 86_400,
        retain_until=1000.0 + 2 * 86_400,
        status=status,
    )


def test_chunks_cover_every_request_once_in_order() -> None:
    assert chunks(0, 25) == []
    assert chunks(60, 25) == [Chunk(0, 0, 25), Chunk(1, 25, 50), Chunk(2, 50, 60)]
    covered = [i for c in chunks(201, 50) for i in range(c.start, c.end)]
    assert covered == list(range(201))


def test_each_line_runs_under_one_request_id() -> None:
    assert request_id("batch_abc123", 7) == "batch_req_abc123_7"


def test_lines_are_read_with_their_file_line_numbers() -> None:
    data = (
        b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}\n'
        b'{"custom_id": "b", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}\n'
    )
    lines = read_lines(data)
    assert [(line.line, line.custom_id) for line in lines] == [(1, "a"), (2, "b")]
    assert read_chunk(write_lines(lines[1:])) == lines[1:]  # a chunk keeps its line numbers


def test_line_checks_name_the_line_and_the_field() -> None:
    lines = [
        BatchLine(1, "a", "POST", CHAT, {"model": "m"}),
        BatchLine(2, "b", "POST", "/v1/embeddings", {"model": "m"}),
        BatchLine(3, "c", "POST", CHAT, {"model": "m", "stream": True}),
    ]
    found = [(e.code, e.param, e.line) for e in check_lines(lines, CHAT)]
    assert found == [
        ("mismatched_endpoint", "url", 2),
        ("unsupported_parameter", "body.stream", 3),
    ]
    assert [e.code for e in check_lines([], CHAT)] == ["empty_file"]


def test_how_a_batch_ends() -> None:
    assert final_status(batch(FINALIZING), unrun=0) == COMPLETED
    assert final_status(batch(FINALIZING), unrun=3) == EXPIRED
    assert final_status(batch(CANCELLING), unrun=3) == CANCELLED


def test_only_the_24h_window_is_offered() -> None:
    assert window_seconds("24h") == 86_400
    with pytest.raises(InvalidRequest) as refused:
        window_seconds("1h")
    assert refused.value.param == "completion_window"


def test_the_wire_shape_is_openais() -> None:
    body = batch().with_status(COMPLETED, 2000.0).as_dict()
    assert set(body) == {
        "id",
        "object",
        "endpoint",
        "errors",
        "input_file_id",
        "completion_window",
        "status",
        "output_file_id",
        "error_file_id",
        "created_at",
        "in_progress_at",
        "expires_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "request_counts",
        "metadata",
    }
    assert body["completed_at"] == 2000 and body["failed_at"] is None
    assert body["request_counts"] == {"total": 0, "completed": 0, "failed": 0}


def test_lines_split_only_on_newlines_as_the_upload_did() -> None:
    body = '{"model": "m", "input": "a\u2028b\u2029c\u0085d"}'
    data = (
        '{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": ' + body + "}\n"
    ).encode()
    (line,) = read_lines(data)
    assert line.body["input"] == "a\u2028b\u2029c\u0085d"
