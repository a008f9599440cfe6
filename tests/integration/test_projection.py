"""`?fields=` and `?verbosity=`: trimmed JSON, presets, the timing breakdown, errors left
whole, and unknown paths refused (before anything is billed)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.http.timing import STEPS
from gantry.runtime import Runtime
from tests.conftest import assert_error
from tests.integration.test_limits import new_key, new_org
from tests.integration.test_limits_settlement import scan

CHAT = "/v1/chat/completions"
BODY = {
    "model": "gantry-small",
    "messages": [{"role": "user", "content": "Tell me about snow."}],
    "max_tokens": 6,
    "n": 2,
    "seed": 9,
}
FRESH = {"Cache-Control": "no-cache"}  # every request runs the model


@pytest.fixture
def api(app_client: TestClient, runtime: Runtime) -> TestClient:
    """A client with an administrator key of an organization of its own (own quotas)."""
    caller = new_key(runtime, new_org(runtime))
    app_client.headers["Authorization"] = f"Bearer {caller.full_key}"
    return app_client


def test_fields_keep_only_the_named_paths(api: TestClient) -> None:
    response = api.post(CHAT, params={"fields": "choices.message.content,usage"}, json=BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"choices", "usage"}
    assert [set(c) for c in body["choices"]] == [{"message"}, {"message"}]
    assert all(set(c["message"]) == {"content"} for c in body["choices"])
    assert set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert int(response.headers["content-length"]) == len(response.content)


def test_fields_on_a_get_and_on_embeddings(api: TestClient) -> None:
    models = api.get("/v1/models", params={"fields": "data.id"}).json()
    assert models["data"] and all(set(m) == {"id"} for m in models["data"])
    embedded = api.post(
        "/v1/embeddings",
        params={"fields": "data.index,usage.total_tokens"},
        json={"model": "gantry-embed-small", "input": ["a", "b"]},
    ).json()
    assert embedded == {
        "data": [{"index": 0}, {"index": 1}],
        "usage": {"total_tokens": embedded["usage"]["total_tokens"]},
    }


def test_an_unknown_field_is_a_400_naming_it_and_costs_nothing(
    app_client: TestClient, runtime: Runtime
) -> None:
    caller = new_key(runtime, new_org(runtime), scopes=("completions:write",))
    response = app_client.post(
        CHAT,
        params={"fields": "choices.message.content,choices.mood,usage"},
        json=BODY,
        headers=caller.headers,
    )
    error = assert_error(response, 400, "invalid_value", "fields")
    assert "choices.mood" in str(error["message"])
    assert error["details"] == {"unknown_fields": ["choices.mood"]}
    assert scan(runtime, "REQ#", caller.record.key_id) == []  # refused before it ran


@pytest.mark.parametrize(
    ("params", "param"),
    [({"verbosity": "loud"}, "verbosity"), ({"fields": "choices..text"}, "fields")],
)
def test_bad_projection_parameters_are_400(
    api: TestClient, params: dict[str, str], param: str
) -> None:
    assert_error(api.post(CHAT, params=params, json=BODY), 400, "invalid_value", param)


def test_errors_are_never_trimmed(api: TestClient) -> None:
    response = api.post(
        CHAT, params={"fields": "id", "verbosity": "minimal"}, json={**BODY, "model": "nope"}
    )
    assert_error(response, 404, "model_not_found", "model")


def test_verbosity_presets(api: TestClient) -> None:
    standard = api.post(CHAT, params={"verbosity": "standard"}, json=BODY).json()
    full = api.post(CHAT, json=BODY).json()
    assert set(standard) == set(full)
    minimal = api.post(CHAT, params={"verbosity": "minimal"}, json=BODY).json()
    assert set(minimal) == {"id", "choices", "usage"}
    assert set(minimal["choices"][0]) == {"index", "message", "finish_reason"}
    assert minimal["usage"] == {"total_tokens": full["usage"]["total_tokens"]}
    assert minimal["choices"][0]["message"]["content"] == full["choices"][0]["message"]["content"]


def test_verbose_adds_the_timing_breakdown(api: TestClient) -> None:
    response = api.post(CHAT, params={"verbosity": "verbose"}, json=BODY, headers=FRESH)
    body: dict[str, Any] = response.json()
    timing = body["timing"]
    assert set(timing) == set(STEPS) == {"auth", "admission", "cache", "model", "settlement"}
    assert all(isinstance(v, float | int) and v >= 0 for v in timing.values())
    assert timing["model"] > 0 and timing["admission"] > 0 and timing["settlement"] > 0
    assert body["choices"] and body["usage"]
    trimmed = api.post(
        CHAT, params={"verbosity": "verbose", "fields": "timing.model,id"}, json=BODY
    ).json()
    assert set(trimmed) == {"id", "timing"} and set(trimmed["timing"]) == {"model"}


def test_verbose_v2_puts_timing_in_metadata(api: TestClient) -> None:
    body = api.post("/v2/chat/completions", params={"verbosity": "verbose"}, json=BODY).json()
    assert set(body["metadata"]["timing"]) == set(STEPS)
    assert "timing" not in body


def test_html_and_streams_pass_through(api: TestClient) -> None:
    page = api.get("/docs/errors", params={"verbosity": "minimal"})
    assert page.status_code == 200 and page.text.startswith("<!doctype html>")
    stream = api.post(CHAT, params={"verbosity": "minimal"}, json={**BODY, "stream": True})
    assert stream.text.endswith("data: [DONE]\n\n")


def test_untyped_routes_check_paths_against_the_body(api: TestClient) -> None:
    health = api.get("/health", params={"fields": "status"})
    assert health.json() == {"status": "ok"}
    assert_error(api.get("/health", params={"fields": "nope"}), 400, "invalid_value", "fields")
