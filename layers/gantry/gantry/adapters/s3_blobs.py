"""File contents in the `files` S3 bucket."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from gantry.domain.errors import ServiceUnavailable
from gantry.domain.files import attachment

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

# Parts of a streamed download: large enough to keep the per-part overhead small, small
# enough that a download holds little memory.
STREAM_PART_BYTES = 256 * 1024
# Parts of a multipart upload (S3 wants at least 5 MiB for every part but the last).
UPLOAD_PART_BYTES = 8 * 1024 * 1024


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

    def writer(self, key: str, content_type: str) -> S3ObjectWriter:
        return S3ObjectWriter(self, key, content_type)

    def stream(self, key: str) -> Iterator[bytes]:
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc
        return _parts(body)

    def download_url(self, key: str, filename: str, seconds: int) -> str:
        try:
            # Checked first, as a stream is: a client is never sent to S3's own error page.
            self._client.head_object(Bucket=self._bucket, Key=key)
            return self._client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self._bucket,
                    "Key": key,
                    "ResponseContentDisposition": attachment(filename),
                },
                ExpiresIn=seconds,
            )
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

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


class S3ObjectWriter:
    """An object written in parts: one PutObject when it stays under a part's size, else a
    multipart upload, so the writer never holds more than one part."""

    def __init__(self, store: S3BlobStore, key: str, content_type: str) -> None:
        self._client = store._client
        self._bucket = store._bucket
        self._key = key
        self._content_type = content_type
        self._pending = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self._pending += data
        self.size += len(data)
        if len(self._pending) >= UPLOAD_PART_BYTES:
            self._upload_part()

    def close(self) -> None:
        try:
            if self._upload_id is None:
                self._client.put_object(
                    Bucket=self._bucket,
                    Key=self._key,
                    Body=bytes(self._pending),
                    ContentType=self._content_type,
                )
                return
            if self._pending or not self._parts:
                self._upload_part()
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc

    def abort(self) -> None:
        """Drop the parts uploaded so far (the bucket's lifecycle rule is the backstop)."""
        if self._upload_id is None:
            return
        with contextlib.suppress(BotoCoreError, ClientError):
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
        self._upload_id = None

    def _upload_part(self) -> None:
        try:
            if self._upload_id is None:
                created = self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._key, ContentType=self._content_type
                )
                self._upload_id = created["UploadId"]
            number = len(self._parts) + 1
            uploaded = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=bytes(self._pending),
            )
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(exc) from exc
        self._parts.append({"ETag": uploaded["ETag"], "PartNumber": number})
        self._pending = bytearray()


def _parts(body: StreamingBody) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(STREAM_PART_BYTES)
    finally:
        body.close()
