"""The S3 blob store against moto: objects written in parts (one PutObject when small, a
multipart upload when large, aborted cleanly) and read back in parts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.stub import Stubber

from gantry.adapters.aws import client
from gantry.adapters.s3_blobs import STREAM_PART_BYTES, UPLOAD_PART_BYTES, S3BlobStore
from gantry.config import Settings
from gantry.domain.errors import ServiceUnavailable


@pytest.fixture
def s3(settings: Settings) -> Any:
    return client("s3", settings)


@pytest.fixture
def store(s3: Any, settings: Settings) -> S3BlobStore:
    return S3BlobStore(s3, settings.files_bucket)


def _key() -> str:
    return f"files/org-blobs/{uuid.uuid4().hex}"


def _uploads(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=bucket, Prefix=key).get(
        "Uploads", []
    )
    return uploads


def test_a_large_object_goes_up_in_parts_and_reads_back_in_parts(
    store: S3BlobStore, s3: Any, settings: Settings
) -> None:
    key = _key()
    line = b"0123456789abcdef" * 63 + b"\n"
    writer = store.writer(key, "application/jsonl")
    for _ in range((2 * UPLOAD_PART_BYTES + 12_345) // len(line)):
        writer.write(line)
    assert _uploads(s3, settings.files_bucket, key) != []  # parts are up before the close
    assert not store.exists(key)  # but nobody sees the object yet
    writer.close()

    assert s3.head_object(Bucket=settings.files_bucket, Key=key, PartNumber=1)["PartsCount"] == 3
    head = s3.head_object(Bucket=settings.files_bucket, Key=key)
    assert head["ContentType"] == "application/jsonl"
    parts = list(store.stream(key))
    assert all(len(part) == STREAM_PART_BYTES for part in parts[:-1])
    assert b"".join(parts) == store.get(key)
    assert len(b"".join(parts)) == writer.size
    assert set(b"".join(parts).splitlines()) == {line.strip()}
    assert _uploads(s3, settings.files_bucket, key) == []


def test_a_small_object_is_one_put(store: S3BlobStore, s3: Any, settings: Settings) -> None:
    key = _key()
    writer = store.writer(key, "application/jsonl")
    writer.write(b'{"a":1}\n')
    writer.write(b'{"a":2}\n')
    writer.close()
    assert store.get(key) == b'{"a":1}\n{"a":2}\n'
    assert writer.size == 16
    assert "PartsCount" not in s3.head_object(Bucket=settings.files_bucket, Key=key, PartNumber=1)


def test_an_aborted_upload_leaves_neither_object_nor_parts(
    store: S3BlobStore, s3: Any, settings: Settings
) -> None:
    key = _key()
    writer = store.writer(key, "application/jsonl")
    writer.write(b"x" * (UPLOAD_PART_BYTES + 1))
    assert len(_uploads(s3, settings.files_bucket, key)) == 1
    writer.abort()
    assert _uploads(s3, settings.files_bucket, key) == []
    assert not store.exists(key)


def test_storage_errors_while_writing_are_503s(store: S3BlobStore, s3: Any) -> None:
    writer = store.writer(_key(), "application/jsonl")
    with Stubber(s3) as stub:
        stub.add_client_error("create_multipart_upload", "SlowDown", http_status_code=503)
        with pytest.raises(ServiceUnavailable) as raised:
            writer.write(b"x" * UPLOAD_PART_BYTES)
    assert raised.value.details == {"subsystem": "storage"}
