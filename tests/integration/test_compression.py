"""Compression: brotli or gzip by Accept-Encoding above the threshold, decoding to the same
JSON; Vary on every compressible response; never on server-sent events; and never inside a
buffered Lambda function, where API Gateway compresses."""

from __future__ import annotations

import gzip
import json
from typing import Any

import brotli
import pytest
from fastapi.testclient import TestClient

from gantry.http.compression import MIN_COMPRESS_BYTES, negotiate
from gantry.local.server import BackgroundServer
from gantry.runtime import Runtime
from tests.integration.test_limits import new_key, new_org

EMBED = {"model": "gantry-embed-small", "input": [f"sentence number {i}" for i in range(8)]}


@pytest.fixture
def api(app_client: TestClient, runtime: Runtime) -> TestClient:
    """A client with an administrator key of an organization of its own (own quotas)."""
    caller = new_key(runtime, new_org(runtime))
    app_client.headers["Authorization"] = f"Bearer {caller.full_key}"
    return app_client


def raw_post(client: TestClient, path: str, body: dict[str, Any], encoding: str) -> Any:
    with client.stream("POST", path, json=body, headers={"Accept-Encoding": encoding}) as response:
        raw = b"".join(response.iter_raw())
    return response, raw


@pytest.mark.parametrize(
    ("accept", "encoding", "decode"),
    [("br", "br", brotli.decompress), ("gzip", "gzip", gzip.decompress)],
)
def test_large_json_is_compressed_and_decodes_to_the_same_json(
    api: TestClient, accept: str, encoding: str, decode: Any
) -> None:
    plain, plain_raw = raw_post(api, "/v1/embeddings", EMBED, "identity")
    packed, packed_raw = raw_post(api, "/v1/embeddings", EMBED, accept)
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == encoding
    assert int(packed.headers["content-length"]) == len(packed_raw) < len(plain_raw) / 2
    assert "Accept-Encoding" in packed.headers["vary"]
    assert json.loads(decode(packed_raw))["data"] == json.loads(plain_raw)["data"]


def test_brotli_is_preferred_unless_the_client_weighs_gzip_higher() -> None:
    assert negotiate("gzip, deflate, br") == "br"
    assert negotiate("gzip;q=1.0, br;q=0.5") == "gzip"
    assert negotiate("br;q=0, gzip") == "gzip"
    assert negotiate("*") == "br"
    assert negotiate("identity") is None
    assert negotiate("deflate") is None
    assert negotiate(None) is None


def test_small_responses_are_sent_as_they_are(api: TestClient) -> None:
    with api.stream(
        "GET", "/v1/models/gantry-small", headers={"Accept-Encoding": "br, gzip"}
    ) as response:
        raw = b"".join(response.iter_raw())
    assert len(raw) < MIN_COMPRESS_BYTES
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"


def test_errors_are_compressed_like_any_json(api: TestClient) -> None:
    response, raw = raw_post(api, "/v1/embeddings", {"model": "nope", "input": "x"}, "gzip")
    assert response.status_code == 404
    assert json.loads(raw)["error"]["code"] == "model_not_found"  # small: not compressed


def test_server_sent_events_are_never_compressed(runtime: Runtime, admin_key: str) -> None:
    import httpx

    body = {
        "model": "gantry-small",
        "messages": [{"role": "user", "content": "Tell me a long story about rain."}],
        "max_tokens": 200,
        "seed": 1,
        "stream": True,
    }
    with (
        BackgroundServer(runtime=runtime) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {admin_key}", "Accept-Encoding": "br, gzip"},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in response.headers
        chunks = list(response.iter_raw())
    text = b"".join(chunks)
    assert len(text) > MIN_COMPRESS_BYTES
    assert text.startswith(b"data: {") and text.endswith(b"data: [DONE]\n\n")
    assert len(chunks) > 10  # delivered frame by frame, not buffered into one body


def test_buffered_lambda_responses_are_left_to_api_gateway(runtime: Runtime) -> None:
    from gantry.local.invoke import LocalContext, load_handler, prepare_environment
    from gantry.local.moto_env import EXAMPLE_API_KEY, key_record
    from tests.integration.test_events import EVENTS

    prepare_environment()
    runtime.key_store.put_key(key_record(EXAMPLE_API_KEY, runtime.pepper()))
    event = json.loads((EVENTS / "inference/embeddings.json").read_text())
    event["body"] = json.dumps(EMBED)
    event["headers"]["Accept-Encoding"] = "br, gzip"
    event["multiValueHeaders"]["Accept-Encoding"] = ["br, gzip"]
    handler = load_handler("inference", str(EVENTS.parent / "functions"))
    response = handler(event, LocalContext(function_name="gantry-inference"))
    assert response["statusCode"] == 200
    headers = {k.lower(): v for k, v in response["headers"].items()}
    assert "content-encoding" not in headers
    assert response["isBase64Encoded"] is False
    assert len(json.loads(response["body"])["data"]) == 8
