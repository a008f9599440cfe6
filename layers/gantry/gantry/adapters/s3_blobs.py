"""File contents in the `files` S3 bucket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from gantry.domain.errors import ServiceUnavailable

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client

# Parts of a streamed download: large enough to keep the per-part overhead small, small
# enough that a download holds little memory.
STREAM_PART_BYTES = 256 * 1024


def _unavailable(exc: Exception) -> ServiceUnavailable:
    error = ServiceUnavailable(
        "File storage is unavailable; retry shortly.",
        details={"subsystem": "storage"},
        retry_after=1,
    )
    error.__cause__ = exc
    return error


class S3BlobStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType=content_type
            )
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

    def get(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

    def stream(self, key: str) -> Iterator[bytes]:
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc
        return _parts(body)

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _unavailable(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc
        return True

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

    def uri(self, key: str) -> str:
        return f"s3://{self._bucket}/{key}"


def _parts(body: StreamingBody) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(STREAM_PART_BYTES)
    finally:
        body.close()
