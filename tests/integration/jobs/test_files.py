"""/v1/files: multipart upload to S3 (moto), JSONL validation with line numbers, listing,
download, deletion and owner scoping."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from botocore.stub import Stubber
from fastapi.testclient import TestClient
from starlette.types import Message

from gantry.adapters.s3_blobs import STREAM_PART_BYTES, S3BlobStore
from gantry.domain.files import FileObject, attachment, new_file_id
from gantry.http.app import create_app
from gantry.local.server import BackgroundServer
from gantry.runtime import Runtime
from tests.conftest import Keys, assert_error
from tests.integration.jobs.conftest import JOBS_ORG, chat_examples, jsonl, upload

FILES = "/v1/files"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(api: TestClient, data: bytes, purpose: str = "fine-tune", name: str = "d.jsonl") -> Any:
    return api.post(FILES, files={"file": (name, data)}, data={"purpose": purpose})


def test_upload_list_retrieve_download_delete(api: TestClient, keys: Keys) -> None:
    headers = bearer(keys.create(org_id="org-files"))
    data = chat_examples()
    created = api.post(
        FILES,
        headers=headers,
        files={"file": ("pirate.jsonl", data)},
        data={"purpose": "fine-tune"},
    )
    assert created.status_code == 200, created.text
    file = created.json()
    assert file["object"] == "file"
    assert file["id"].startswith("file-")
    assert file["bytes"] == len(data)
    assert file["filename"] == "pirate.jsonl"
    assert file["purpose"] == "fine-tune"
    assert file["status"] == "processed"

    assert api.get(f"{FILES}/{file['id']}", headers=headers).json() == file
    content = api.get(f"{FILES}/{file['id']}/content", headers=headers)
    assert content.status_code == 200
    assert content.content == data

    second = api.post(
        FILES,
        headers=headers,
        files={"file": ("more.jsonl", data)},
        data={"purpose": "fine-tune"},
    ).json()
    listed = api.get(FILES, headers=headers).json()
    assert [f["id"] for f in listed["data"]] == [second["id"], file["id"]]
    oldest_first = api.get(FILES, headers=headers, params={"order": "asc", "limit": 1}).json()
    assert [f["id"] for f in oldest_first["data"]] == [file["id"]]
    assert oldest_first["has_more"] is True
    page_two = api.get(FILES, headers=headers, params={"order": "asc", "after": file["id"]}).json()
    assert [f["id"] for f in page_two["data"]] == [second["id"]]
    assert api.get(FILES, headers=headers, params={"purpose": "batch"}).json()["data"] == []

    deleted = api.delete(f"{FILES}/{file['id']}", headers=headers)
    assert deleted.json() == {"id": file["id"], "object": "file", "deleted": True}
    assert_error(api.get(f"{FILES}/{file['id']}", headers=headers), 404, "not_found", "file_id")
    assert_error(
        api.get(f"{FILES}/{file['id']}/content", headers=headers), 404, "not_found", "file_id"
    )


def test_another_organization_gets_404(api: TestClient, keys: Keys) -> None:
    file = upload(api, chat_examples())
    other = bearer(keys.create(org_id="org-stranger"))
    for method, path in (
        ("GET", f"{FILES}/{file['id']}"),
        ("GET", f"{FILES}/{file['id']}/content"),
        ("DELETE", f"{FILES}/{file['id']}"),
    ):
        assert_error(api.request(method, path, headers=other), 404, "not_found", "file_id")
    assert file["id"] not in [f["id"] for f in api.get(FILES, headers=other).json()["data"]]
    assert api.get(f"{FILES}/{file['id']}").status_code == 200


def chat_line(**overrides: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]
    }
    line.update(overrides)
    return line


@pytest.mark.parametrize(
    ("data", "line", "field"),
    [
        (jsonl([chat_line()]) + b"{not json}\n", 2, None),
        (jsonl([chat_line(), chat_line(), [1, 2]]), 3, None),  # type: ignore[list-item]
        (jsonl([chat_line(messages=[{"role": "user", "content": "hi"}])]), 1, "messages"),
        (
            jsonl([chat_line(), chat_line(messages=[{"role": "robot", "content": "x"}])]),
            2,
            "messages[0].role",
        ),
        (
            jsonl([chat_line(messages=[{"role": "user", "content": 5}])]),
            1,
            "messages[0].content",
        ),
        (jsonl([chat_line(), {"prompt": "a", "completion": "b"}]), 2, None),
        (jsonl([chat_line(), {"text": "a"}]), 2, "label"),
        (jsonl([chat_line(), {"hello": "world"}]), 2, None),
        (jsonl([chat_line()]) + b"\n" + jsonl([chat_line()]), 2, None),
        (b"\xff\xfe", 1, None),
    ],
)
def test_malformed_jsonl_names_the_line_and_field(
    api: TestClient, data: bytes, line: int, field: str | None
) -> None:
    error = assert_error(post(api, data), 400, "invalid_file", "file")
    assert error["details"] == {"line": line, "field": field}
    assert f"line {line}" in str(error["message"])


def test_batch_files_are_checked_for_their_purpose(api: TestClient) -> None:
    request = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}
    ok = post(api, jsonl([request, {**request, "custom_id": "b"}]), purpose="batch")
    assert ok.status_code == 200, ok.text
    duplicate = post(api, jsonl([request, request]), purpose="batch")
    error = assert_error(duplicate, 400, "invalid_file", "file")
    assert error["details"] == {"line": 2, "field": "custom_id"}
    wrong_url = post(api, jsonl([{**request, "url": "/v1/keys"}]), purpose="batch")
    assert_error(wrong_url, 400, "invalid_file", "file")
    chat_for_batch = post(api, chat_examples(), purpose="batch")
    assert_error(chat_for_batch, 400, "invalid_file", "file")


def test_bad_uploads(api: TestClient) -> None:
    assert_error(post(api, chat_examples(), purpose="training"), 400, "invalid_value", "purpose")
    assert_error(post(api, b""), 400, "invalid_file", "file")
    assert_error(post(api, chat_examples(), name="data.csv"), 400, "invalid_file", "file")
    missing = api.post(FILES, data={"purpose": "fine-tune"}, files={"other": ("x", b"1")})
    assert_error(missing, 400, "missing_required_parameter", "file")
    as_json = api.post(FILES, json={"purpose": "fine-tune"})
    assert_error(as_json, 415, "unsupported_media_type")
    too_big = jsonl([chat_line(messages=[{"role": "assistant", "content": "x" * 300_000}])])
    assert_error(post(api, too_big), 413, "payload_too_large", "file")
    with TestClient(create_app()) as anonymous_client:
        anonymous = anonymous_client.post(FILES, files={"file": ("d.jsonl", b"{")}, data={})
    assert_error(anonymous, 401, "missing_api_key")


def test_uploaded_content_is_stored_in_s3(api: TestClient, settings: Any) -> None:
    from gantry.adapters.aws import client

    file = upload(api, chat_examples())
    key = f"files/org-jobs/{file['id']}"
    stored = client("s3", settings).get_object(Bucket=settings.files_bucket, Key=key)
    assert stored["Body"].read() == chat_examples()
    assert json.loads(chat_examples().splitlines()[0])["messages"]


def _stored_output(runtime: Runtime, size: int) -> tuple[FileObject, bytes]:
    """A batch output file of about `size` bytes, stored as the batch worker stores one
    (uploads are capped far lower than the files a batch may write)."""
    line = json.dumps({"custom_id": "x", "response": {"body": "y" * 1000}}).encode() + b"\n"
    data = line * (size // len(line) + 1)
    file = FileObject(
        id=new_file_id(),
        org_id=JOBS_ORG,
        purpose="batch_output",
        filename="batch_output.jsonl",
        bytes=len(data),
        created_at=time.time(),
        lines=data.count(b"\n"),
    )
    return runtime.jobs.files.store(file, data), data


async def _download(path: str, key: str, query: str = "") -> tuple[dict[str, str], list[bytes]]:
    """GET `path` through the ASGI app, keeping each body message the app sends."""
    sent: list[Message] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {key}".encode()), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }

    requested = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal requested
        if requested:  # the client stays until the response ends
            await never.wait()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await create_app(["files"])(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 200
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return headers, [m.get("body", b"") for m in sent if m["type"] == "http.response.body"]


@pytest.mark.parametrize("query", ["", "fields=id"])  # projection applies to JSON objects only
def test_a_large_file_downloads_in_parts(runtime: Runtime, admin_key: str, query: str) -> None:
    """Never whole in memory: a 3 MB file leaves in 256 KiB parts, with its length up front
    (in AWS the route streams, so a file may be larger than a Lambda response)."""
    file, data = _stored_output(runtime, 3 * 1024 * 1024)
    headers, parts = asyncio.run(_download(f"{FILES}/{file.id}/content", admin_key, query))
    assert headers["content-length"] == str(len(data))
    assert headers["content-type"].startswith("application/jsonl")
    assert b"".join(parts) == data
    assert max(len(part) for part in parts) == STREAM_PART_BYTES
    assert len([part for part in parts if part]) == -(-len(data) // STREAM_PART_BYTES)


def test_a_large_file_downloads_through_the_local_server_compressed(
    runtime: Runtime, admin_key: str
) -> None:
    file, data = _stored_output(runtime, 2 * 1024 * 1024)
    with BackgroundServer(runtime=runtime) as server:
        url = f"{server.base_url}{FILES}/{file.id}/content"
        plain = httpx.get(url, headers={**bearer(admin_key), "Accept-Encoding": "identity"})
        gzipped = httpx.get(url, headers={**bearer(admin_key), "Accept-Encoding": "gzip"})
    assert plain.status_code == 200 and plain.content == data
    assert plain.headers["content-length"] == str(len(data))
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.content == data  # httpx decodes it
    assert gzipped.num_bytes_downloaded < len(data) // 10
    assert "content-length" not in gzipped.headers  # compressed as it streams


def test_storage_down_before_a_download_is_a_503(
    runtime: Runtime, api: TestClient, admin_key: str
) -> None:
    file, _ = _stored_output(runtime, 1000)
    with Stubber(runtime.jobs.blobs._client) as stub:
        stub.add_client_error("get_object", "SlowDown", "Please reduce your request rate.", 503)
        response = api.get(f"{FILES}/{file.id}/content", headers=bearer(admin_key))
    error = assert_error(response, 503, "service_unavailable")
    assert error["details"] == {"subsystem": "storage"}
    assert response.headers["retry-after"] == "1"


def test_a_file_too_large_to_stream_redirects_to_a_short_lived_storage_url(
    runtime: Runtime, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda streams at most 200 MB: a larger file is served by S3 itself, through a
    presigned URL that expires, and an HTTP client that follows the redirect (the OpenAI
    SDK does) gets the bytes without sending its API key to the storage."""
    file, data = _stored_output(runtime, 300_000)
    monkeypatch.setattr(runtime.jobs.files, "max_streamed_bytes", 100_000)
    with BackgroundServer(runtime=runtime) as server:
        url = f"{server.base_url}{FILES}/{file.id}/content"
        redirect = httpx.get(url, headers=bearer(admin_key))
        followed = httpx.get(url, headers=bearer(admin_key), follow_redirects=True)
    assert redirect.status_code == 307
    location = redirect.headers["location"]
    assert "X-Amz-Expires=300" in location and "X-Amz-Signature=" in location
    assert followed.status_code == 200 and followed.content == data
    assert followed.history[0].status_code == 307
    assert "authorization" not in followed.request.headers
    assert f'filename="{file.filename}"' in followed.headers["content-disposition"]


def test_any_file_name_downloads_with_an_ascii_safe_disposition(
    api: TestClient, admin_key: str
) -> None:
    """Headers carry ASCII: a name beyond it is sent as RFC 5987 `filename*`, with an
    ASCII stand-in for older clients (before, such a download was a 500)."""
    name = "données été.jsonl"
    created = api.post(
        FILES,
        headers=bearer(admin_key),
        files={"file": (name, chat_examples())},
        data={"purpose": "fine-tune"},
    )
    assert created.status_code == 200, created.text
    assert created.json()["filename"] == name
    content = api.get(f"{FILES}/{created.json()['id']}/content", headers=bearer(admin_key))
    assert content.status_code == 200 and content.content == chat_examples()
    assert content.headers["content-disposition"] == (
        'attachment; filename="donn_es _t_.jsonl"; '
        "filename*=UTF-8''donn%C3%A9es%20%C3%A9t%C3%A9.jsonl"
    )
    assert attachment('a "b".jsonl').startswith('attachment; filename="a _b_.jsonl"; ')


def test_in_aws_a_large_download_is_a_regional_sigv4_url() -> None:
    """The URL every region accepts: the bucket's regional virtual-hosted endpoint, SigV4
    with the function's temporary credentials (signing needs no network)."""
    from gantry.adapters.aws import client, reset_clients
    from gantry.config import Settings

    settings = Settings(env="aws", region="il-central-1", aws_endpoint_url=None)
    session = {
        "AWS_ACCESS_KEY_ID": "ASIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "token",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in session.items():
            patch.setenv(name, value)
        reset_clients()
        try:
            s3 = client("s3", settings)
            store = S3BlobStore(s3, "gantry-files-1-il-central-1")
            with Stubber(s3) as stub:  # the object is there (checked before the URL is made)
                where = {"Bucket": "gantry-files-1-il-central-1", "Key": "files/org/file-1"}
                stub.add_response("head_object", {"ContentLength": 1}, where)
                url = httpx.URL(store.download_url("files/org/file-1", "out.jsonl", 300))
        finally:
            reset_clients()
    assert url.host == "gantry-files-1-il-central-1.s3.il-central-1.amazonaws.com"
    assert url.params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert url.params["X-Amz-Expires"] == "300"
    assert url.params["X-Amz-Security-Token"] == "token"
    assert url.params["response-content-disposition"].startswith('attachment; filename="out')


def test_a_large_file_whose_contents_are_gone_is_a_503_not_a_redirect(
    runtime: Runtime, api: TestClient, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    file, _ = _stored_output(runtime, 300_000)
    monkeypatch.setattr(runtime.jobs.files, "max_streamed_bytes", 100_000)
    runtime.jobs.blobs.delete(f"files/{file.org_id}/{file.id}")
    response = api.get(f"{FILES}/{file.id}/content", headers=bearer(admin_key))
    error = assert_error(response, 503, "service_unavailable")
    assert error["details"] == {"subsystem": "storage"}
