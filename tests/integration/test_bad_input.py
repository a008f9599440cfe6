"""Every kind of bad input gets a clear error in the one envelope, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import assert_error

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "Hello there"}]


def chat(**overrides: Any) -> dict[str, Any]:
    return {"model": "gantry-small", "messages": OK_MESSAGES, **overrides}


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (chat(temperature=2.5), 400, "invalid_value", "temperature"),
        (chat(temperature=-0.1), 400, "invalid_value", "temperature"),
        (chat(temperature="hot"), 400, "invalid_type", "temperature"),
        (chat(top_p=0), 400, "invalid_value", "top_p"),
        (chat(top_p=1.5), 400, "invalid_value", "top_p"),
        (chat(max_tokens=-5), 400, "invalid_value", "max_tokens"),
        (chat(max_tokens=0), 400, "invalid_value", "max_tokens"),
        (chat(max_tokens=10**12), 400, "invalid_value", "max_tokens"),
        (chat(max_tokens=5000), 400, "invalid_value", "max_tokens"),
        (chat(max_tokens=1.5), 400, "invalid_type", "max_tokens"),
        (chat(max_tokens=True), 400, "invalid_type", "max_tokens"),
        (chat(n=0), 400, "invalid_value", "n"),
        (chat(stop=["a", "b", "c", "d", "e"]), 400, "invalid_value", "stop"),
        (chat(stop=[1]), 400, "invalid_type", "stop[0]"),
        (chat(stop=""), 400, "invalid_value", "stop"),
        (chat(presence_penalty=3), 400, "invalid_value", "presence_penalty"),
        (chat(frequency_penalty=-2.5), 400, "invalid_value", "frequency_penalty"),
        (chat(logit_bias={"hello": 1}), 400, "invalid_value", "logit_bias"),
        (chat(logit_bias={"12": 101}), 400, "invalid_value", "logit_bias.12"),
        (chat(top_logprobs=3), 400, "invalid_value", "top_logprobs"),
        (chat(top_logprobs=30, logprobs=True), 400, "invalid_value", "top_logprobs"),
        (chat(messages=[]), 400, "invalid_value", "messages"),
        (chat(messages="hi"), 400, "invalid_type", "messages"),
        (
            chat(messages=[{"role": "user"}]),
            400,
            "missing_required_parameter",
            "messages[0].content",
        ),
        (
            chat(messages=[{"role": "robot", "content": "x"}]),
            400,
            "invalid_value",
            "messages[0].role",
        ),
        (
            chat(messages=[{"role": "user", "content": "x", "mood": "happy"}]),
            400,
            "unknown_parameter",
            "messages[0].mood",
        ),
        (
            chat(messages=[{"role": "user", "content": 42}]),
            400,
            "invalid_type",
            "messages[0].content",
        ),
        ({"messages": OK_MESSAGES}, 400, "missing_required_parameter", "model"),
        (chat(model=7), 400, "invalid_type", "model"),
        (chat(model="no-such-model"), 404, "model_not_found", "model"),
        (chat(model="gantry-embed-small"), 400, "model_not_supported", "model"),
        (chat(frobnicate=True), 400, "unknown_parameter", "frobnicate"),
        (chat(max_tokens=5, max_completion_tokens=5), 400, "invalid_value", "max_tokens"),
        (
            chat(tools=[{"type": "function", "function": {"name": "f"}}]),
            400,
            "unsupported_parameter",
            "tools",
        ),
        (
            chat(response_format={"type": "json_object"}),
            400,
            "unsupported_parameter",
            "response_format",
        ),
        (chat(store=True), 400, "unsupported_parameter", "store"),
        (chat(service_tier="flex"), 400, "invalid_value", "service_tier"),
        (chat(stream_options={"include_usage": True}), 400, "invalid_value", "stream_options"),
        (chat(reasoning_effort="high"), 400, "unsupported_parameter", "reasoning_effort"),
        (
            chat(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
                        ],
                    }
                ]
            ),
            400,
            "unsupported_parameter",
            "messages[0].content[0]",
        ),
    ],
)
def test_chat_parameters_are_validated(
    api: TestClient, body: dict[str, Any], status: int, code: str, param: str
) -> None:
    error = assert_error(api.post(CHAT, json=body), status, code, param)
    if code == "unsupported_parameter" and param != "store":
        assert "gantry-small" in str(error["message"])


def test_huge_prompt_is_context_length_exceeded(api: TestClient) -> None:
    long_text = "word " * 5000
    body = chat(messages=[{"role": "user", "content": long_text}], max_tokens=100)
    error = assert_error(api.post(CHAT, json=body), 400, "context_length_exceeded", "messages")
    details = error["details"]
    assert isinstance(details, dict)
    assert details["context_window"] == 4096
    assert details["max_tokens"] == 100
    assert details["prompt_tokens"] > 4096


def test_prompt_plus_max_tokens_over_window(api: TestClient) -> None:
    body = chat(messages=[{"role": "user", "content": "word " * 3500}], max_tokens=1000)
    error = assert_error(api.post(CHAT, json=body), 400, "context_length_exceeded", "messages")
    details = error["details"]
    assert isinstance(details, dict)
    assert details["prompt_tokens"] + 1000 > 4096 >= details["prompt_tokens"]


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b'{"model": "gantry-small", "messages": [', {}, 400, "invalid_json"),
        (b"[1, 2, 3]", {}, 400, "invalid_json"),
        (b'"just a string"', {}, 400, "invalid_json"),
        (b"", {}, 400, "invalid_json"),
        (b'{"model": "gantry-small\xff\xfe"}', {}, 400, "invalid_encoding"),
        (
            b"model=gantry-small",
            {"content-type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (
            b'{"model": "gantry-small"}',
            {"content-type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_malformed_bodies(
    api: TestClient, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    sent = {"content-type": "application/json", **headers}
    assert_error(api.post(CHAT, content=content, headers=sent), status, code, None)


def test_ten_megabyte_body_is_413(api: TestClient) -> None:
    content = (
        b'{"model": "gantry-small", "messages": [{"role": "user", "content": "'
        + (b"a" * (10 * 1024 * 1024))
        + b'"}]}'
    )
    response = api.post(CHAT, content=content, headers={"content-type": "application/json"})
    error = assert_error(response, 413, "payload_too_large", None)
    assert error["details"] == {"max_body_bytes": 5 * 1024 * 1024}


def test_unknown_route_and_wrong_method(api: TestClient) -> None:
    assert_error(api.get("/v1/nope"), 404, "not_found", None)
    response = api.get(CHAT)
    assert_error(response, 405, "method_not_allowed", None)
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "gantry-embed-small", "input": ""}, "invalid_value", "input"),
        ({"model": "gantry-embed-small", "input": ["ok", "  "]}, "invalid_value", "input[1]"),
        ({"model": "gantry-embed-small", "input": []}, "invalid_value", "input"),
        ({"model": "gantry-embed-small", "input": ["x"] * 2049}, "invalid_value", "input"),
        ({"model": "gantry-embed-small", "input": [1, 2, 3]}, "unsupported_parameter", "input"),
        (
            {"model": "gantry-embed-small", "input": "x", "dimensions": 300},
            "invalid_value",
            "dimensions",
        ),
        (
            {"model": "gantry-embed-small", "input": "x", "dimensions": 0},
            "invalid_value",
            "dimensions",
        ),
        (
            {"model": "gantry-embed-small", "input": "x", "encoding_format": "hex"},
            "invalid_value",
            "encoding_format",
        ),
        ({"model": "gantry-small", "input": "x"}, "model_not_supported", "model"),
        ({"input": "x"}, "missing_required_parameter", "model"),
    ],
)
def test_embedding_input_is_validated(
    api: TestClient, body: dict[str, Any], code: str, param: str
) -> None:
    assert_error(api.post("/v1/embeddings", json=body), 400, code, param)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "gantry-small", "prompt": []}, "invalid_value", "prompt"),
        ({"model": "gantry-small", "prompt": [[1, 2]]}, "unsupported_parameter", "prompt"),
        (
            {"model": "gantry-small", "prompt": "x", "suffix": "y"},
            "unsupported_parameter",
            "suffix",
        ),
        (
            {"model": "gantry-small", "prompt": "x", "n": 3, "best_of": 2},
            "invalid_value",
            "best_of",
        ),
        ({"model": "gantry-small", "prompt": "x", "logprobs": 9}, "invalid_value", "logprobs"),
        (
            {"model": "gantry-small", "prompt": "x", "echo": True, "logprobs": 1},
            "unsupported_parameter",
            "echo",
        ),
    ],
)
def test_completion_parameters_are_validated(
    api: TestClient, body: dict[str, Any], code: str, param: str
) -> None:
    assert_error(api.post("/v1/completions", json=body), 400, code, param)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": "x", "labels": ["only-one"]}, "invalid_value", "labels"),
        ({"input": "x", "labels": ["a", "a"]}, "invalid_value", "labels"),
        ({"input": "", "labels": ["a", "b"]}, "invalid_value", "input"),
        ({"labels": ["a", "b"]}, "missing_required_parameter", "input"),
    ],
)
def test_classification_input_is_validated(
    api: TestClient, body: dict[str, Any], code: str, param: str
) -> None:
    assert_error(api.post("/v1/classifications", json=body), 400, code, param)


def test_moderation_refuses_images(api: TestClient) -> None:
    body = {"input": [{"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}
    assert_error(api.post("/v1/moderations", json=body), 400, "unsupported_parameter", "input[0]")
