"""/v2/chat/completions and the deprecation policy: the v2 envelope (buffered and streamed),
Deprecation/Sunset/Link headers and metadata warnings, and 410 after the sunset date, all
driven by the registry and the route table (time from the injected clock)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.domain.lifecycle import RouteTable
from gantry.runtime import Runtime
from tests.conftest import FakeClock, assert_error
from tests.integration.test_limits import new_key, new_org

V2 = "/v2/chat/completions"
BODY: dict[str, Any] = {
    "model": "gantry-small",
    "messages": [{"role": "user", "content": "Tell me about the wind."}],
    "max_tokens": 8,
    "seed": 5,
}


@pytest.fixture
def api(app_client: TestClient, runtime: Runtime) -> TestClient:
    """A client with an administrator key of an organization of its own (own quotas)."""
    caller = new_key(runtime, new_org(runtime))
    app_client.headers["Authorization"] = f"Bearer {caller.full_key}"
    return app_client


def move_to(clock: FakeClock, day: str) -> None:
    clock.wall = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def test_v2_separates_content_from_metadata(api: TestClient) -> None:
    response = api.post(V2, json=BODY, headers={"Cache-Control": "no-cache"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "object", "created", "output", "usage", "model", "metadata"}
    assert body["object"] == "chat.completion"
    (choice,) = body["output"]["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["cost_usd"] == float(response.headers["x-cost-usd"]) > 0
    assert usage["cached_tokens"] == 0
    assert body["model"] == {"id": "gantry-small", "version": "2026-11-01"}
    metadata = body["metadata"]
    assert metadata["request_id"] == response.headers["x-request-id"]
    assert isinstance(metadata["processing_ms"], int)
    assert metadata["cache"] == {"status": "BYPASS"}
    assert metadata["warnings"] == []


def test_v2_and_v1_give_the_same_answer(api: TestClient) -> None:
    v1 = api.post("/v1/chat/completions", json=BODY).json()
    v2 = api.post(V2, json=BODY).json()
    assert (
        v2["output"]["choices"][0]["message"]["content"] == (v1["choices"][0]["message"]["content"])
    )
    assert v2["metadata"]["cache"] == {"status": "HIT"}  # v1 stored it: same model and call
    assert v2["usage"]["cached_tokens"] == v2["usage"]["prompt_tokens"]


def test_v2_stream_chunks(api: TestClient) -> None:
    response = api.post(V2, json={**BODY, "stream": True})
    assert response.status_code == 200
    assert response.headers["x-cache-status"] == "BYPASS"
    lines = [line for line in response.text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == {"id": "gantry-small", "version": "2026-11-01"}
        assert "choices" not in chunk and "output" in chunk
    assert chunks[0]["output"]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(
        c["output"]["choices"][0]["delta"].get("content", "")
        for c in chunks
        if c["output"]["choices"]
    )
    buffered = api.post(V2, json=BODY).json()
    assert text == buffered["output"]["choices"][0]["message"]["content"]
    final = chunks[-1]
    assert final["output"]["choices"] == []
    assert set(final["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cached_tokens",
        "cost_usd",
    }
    assert final["metadata"]["request_id"] == response.headers["x-request-id"]
    assert final["metadata"]["cache"] == {"status": "BYPASS"}
    assert all("usage" not in c for c in chunks[:-1])


def test_a_deprecated_model_warns_in_headers_and_metadata(api: TestClient) -> None:
    response = api.post(V2, json={**BODY, "model": "gantry-small-2025-06"})
    assert response.status_code == 200
    assert response.headers["deprecation"] == "@1788220800"  # 2026-09-01
    assert response.headers["sunset"] == "Mon, 01 Mar 2027 00:00:00 GMT"
    link = response.headers["link"]
    assert '</docs/versioning#model-gantry-small-2025-06>; rel="deprecation"' in link
    assert '</v1/models/gantry-small>; rel="successor-version"' in link
    (warning,) = response.json()["metadata"]["warnings"]
    assert "gantry-small-2025-06" in warning and "2027-03-01" in warning
    assert "gantry-small instead" in warning


def test_a_model_past_its_sunset_is_410(api: TestClient, clock: FakeClock) -> None:
    move_to(clock, "2027-02-28T23:59:59")
    old = {**BODY, "model": "gantry-small-2025-06"}
    assert api.post("/v1/chat/completions", json=old).status_code == 200
    move_to(clock, "2027-03-01T00:00:00")
    for path in ("/v1/chat/completions", V2):
        error = assert_error(api.post(path, json=old), 410, "model_retired", "model")
        assert error["details"] == {
            "sunset_date": "2027-03-01",
            "replacement": "gantry-small",
            "migration_guide": "/docs/versioning#model-gantry-small-2025-06",
        }
    streamed = api.post("/v1/chat/completions", json={**old, "stream": True})
    assert_error(streamed, 410, "model_retired", "model")
    catalogue = api.get("/v1/models/gantry-small-2025-06")
    assert catalogue.status_code == 200  # still described, with its dates


def test_the_legacy_route_is_deprecated_then_retired(api: TestClient, clock: FakeClock) -> None:
    legacy = {"model": "gantry-small", "prompt": "The cloud", "max_tokens": 3}
    response = api.post("/v1/completions", json=legacy)
    assert response.status_code == 200
    assert response.headers["deprecation"] == "@1767225600"  # 2026-01-01
    assert response.headers["sunset"] == "Fri, 31 Dec 2027 00:00:00 GMT"
    link = response.headers["link"]
    assert '</docs/versioning#route-post-v1-completions>; rel="deprecation"' in link
    assert '</v1/chat/completions>; rel="successor-version"' in link
    move_to(clock, "2027-12-31T00:00:00")
    for body in (legacy, {**legacy, "stream": True}):
        error = assert_error(api.post("/v1/completions", json=body), 410, "endpoint_retired")
        assert error["details"]["replacement"] == "POST /v1/chat/completions"
    assert api.post("/v1/chat/completions", json=BODY).status_code == 200


def test_a_deprecated_model_on_a_deprecated_route_keeps_both_links(
    api: TestClient,
) -> None:
    response = api.post(
        "/v1/completions",
        json={"model": "gantry-small-2025-06", "prompt": "The cloud", "max_tokens": 3},
    )
    link = response.headers["link"]
    assert link.count('rel="deprecation"') == 2
    assert link.count('rel="successor-version"') == 2
    # The one that ends first (the model, 2027-03-01) sets Sunset and Deprecation.
    assert response.headers["sunset"] == "Mon, 01 Mar 2027 00:00:00 GMT"


def test_the_route_table_is_data(api: TestClient, runtime: Runtime, clock: FakeClock) -> None:
    move_to(clock, "2027-06-01T00:00:00")
    runtime.__dict__["route_table"] = RouteTable.from_dict(
        {
            "routes": [
                {
                    "method": "POST",
                    "path": "/v1/embeddings",
                    "deprecation_date": "2027-01-01",
                    "sunset_date": "2027-05-01",
                    "successor": "/v2/embeddings",
                },
                {
                    "method": "POST",
                    "path": V2,
                    "deprecation_date": "2027-05-01",
                    "sunset_date": "2028-05-01",
                    "successor": "/v3/chat/completions",
                },
            ]
        }
    )
    gone = api.post("/v1/embeddings", json={"model": "gantry-embed-small", "input": "x"})
    assert_error(gone, 410, "endpoint_retired")
    warned = api.post(V2, json=BODY)
    assert warned.status_code == 200
    assert warned.headers["sunset"] == "Mon, 01 May 2028 00:00:00 GMT"
    (warning,) = warned.json()["metadata"]["warnings"]
    assert "POST /v2/chat/completions is deprecated" in warning
    completions = api.post("/v1/completions", json={"model": "gantry-small", "prompt": "x"})
    assert "deprecation" not in completions.headers  # not in this table


def test_the_versioning_page_lists_what_is_deprecated(app_client: TestClient) -> None:
    page = app_client.get("/docs/versioning")
    assert page.status_code == 200
    assert 'id="route-post-v1-completions"' in page.text
    assert 'id="model-gantry-small-2025-06"' in page.text
    assert "410" in page.text
