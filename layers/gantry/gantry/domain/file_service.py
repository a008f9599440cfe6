"""Uploading, listing, reading and deleting files, scoped to the caller's organization."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from gantry.domain.errors import InvalidRequest, NotFound, PayloadTooLarge
from gantry.domain.files import (
    FileObject,
    is_file_id,
    new_file_id,
    validate_filename,
    validate_jsonl,
    validate_purpose,
)
from gantry.job_ports import BlobStore, BlobWriter, FileIndex
from gantry.ports import Clock

JSONL_TYPE = "application/jsonl"
DEFAULT_MAX_STREAMED_BYTES = 150 * 1024 * 1024
DOWNLOAD_URL_SECONDS = 300


@dataclass(frozen=True)
class Download:
    """A file's contents as a stream of parts, or as a URL to fetch them from."""

    file: FileObject
    parts: Iterator[bytes] | None = None
    url: str | None = None


def content_key(org_id: str, file_id: str) -> str:
    return f"files/{org_id}/{file_id}"


class FileService:
    def __init__(
        self,
        index: FileIndex,
        blobs: BlobStore,
        clock: Clock,
        max_bytes: int,
        max_streamed_bytes: int = DEFAULT_MAX_STREAMED_BYTES,
    ) -> None:
        self._index = index
        self._blobs = blobs
        self._clock = clock
        self.max_bytes = max_bytes
        self.max_streamed_bytes = max_streamed_bytes

    def upload(self, org_id: str, filename: str | None, purpose: str, data: bytes) -> FileObject:
        purpose = validate_purpose(purpose)
        name = validate_filename(filename)
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(
                f"The file is {len(data)} bytes; files may be at most {self.max_bytes} bytes.",
                code="payload_too_large",
                param="file",
            )
        if not name.lower().endswith(".jsonl"):
            raise InvalidRequest(
                f"Files for '{purpose}' must be JSONL with a .jsonl name; got '{name}'.",
                code="invalid_file",
                param="file",
            )
        summary = validate_jsonl(data, purpose)
        file = FileObject(
            id=new_file_id(),
            org_id=org_id,
            purpose=purpose,
            filename=name,
            bytes=len(data),
            created_at=self._clock.now(),
            lines=summary.lines,
            example_format=summary.example_format,
        )
        return self.store(file, data)

    def store(self, file: FileObject, data: bytes) -> FileObject:
        """Write the contents, then the metadata that makes the file visible."""
        key = content_key(file.org_id, file.id)
        self._blobs.put(key, data, _media_type(file))
        self._index.put_file(file, key)
        return file

    def line_writer(self, file: FileObject) -> LineWriter:
        """A JSONL file written a line at a time (for files too large to hold in memory);
        `file`'s size and line count are filled in when it is finished."""
        key = content_key(file.org_id, file.id)
        return LineWriter(self._index, file, key, self._blobs.writer(key, _media_type(file)))

    def get(self, org_id: str, file_id: str, param: str = "file_id") -> FileObject:
        return self._owned(org_id, file_id, param)[0]

    def content(self, org_id: str, file_id: str) -> Download:
        """The file's bytes in parts (a download never holds the whole file), or, for a
        file too large to stream through the API, a short-lived URL of the object."""
        file, key = self._owned(org_id, file_id, "file_id")
        if file.bytes > self.max_streamed_bytes:
            url = self._blobs.download_url(key, file.filename, DOWNLOAD_URL_SECONDS)
            return Download(file, url=url)
        return Download(file, parts=self._blobs.stream(key))

    def read(self, file_id: str) -> tuple[FileObject, bytes] | None:
        """Any organization's file (the workers act for the owner of the job)."""
        found = self._index.get_file(file_id)
        if found is None:
            return None
        file, key = found
        return file, self._blobs.get(key)

    def uri(self, file: FileObject) -> str:
        return self._blobs.uri(content_key(file.org_id, file.id))

    def list_files(
        self, org_id: str, purpose: str | None, limit: int, after: str | None, newest_first: bool
    ) -> tuple[list[FileObject], bool]:
        return self._index.list_files(org_id, purpose, limit, after, newest_first)

    def delete(self, org_id: str, file_id: str) -> FileObject:
        file, key = self._owned(org_id, file_id, "file_id")
        self._index.delete_file(file_id)
        self._blobs.delete(key)
        return file

    def _owned(self, org_id: str, file_id: str, param: str) -> tuple[FileObject, str]:
        found = self._index.get_file(file_id) if is_file_id(file_id) else None
        if found is None or found[0].org_id != org_id:
            raise NotFound(f"No file with id '{file_id}'.", code="not_found", param=param)
        return found


def _media_type(file: FileObject) -> str:
    return JSONL_TYPE if file.filename.endswith(".jsonl") else "text/csv"


class LineWriter:
    def __init__(self, index: FileIndex, file: FileObject, key: str, blob: BlobWriter) -> None:
        self._index = index
        self._file = file
        self._key = key
        self._blob = blob
        self.lines = 0

    def write(self, line: str) -> None:
        self._blob.write(line.encode() + b"\n")
        self.lines += 1

    def finish(self) -> FileObject | None:
        """Store the contents, then the metadata that makes the file visible; None (and
        nothing stored) when no line was written."""
        if self.lines == 0:
            return None
        self._blob.close()
        file = replace(self._file, bytes=self._blob.size, lines=self.lines)
        self._index.put_file(file, self._key)
        return file

    def abort(self) -> None:
        self._blob.abort()
