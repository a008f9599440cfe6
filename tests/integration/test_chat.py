"""POST /v1/chat/completions and POST /v1/completions against the embedded models."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from gantry.domain.registry import ModelSpec
from gantry.ports import Message
from gantry.runtime import Runtime

CHAT = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me about the weather in the mountains."},
]


def chat(api: TestClient, **body: Any) -> Any:
    response = api.post(CHAT, json={"model": "gantry-small", "messages": MESSAGES, **body})
    assert response.status_code == 200, response.text
    return response


def spec(runtime: Runtime, model: str = "gantry-small") -> ModelSpec:
    return runtime.registry.get(model)


def test_minimal_request_works_with_exact_usage(api: TestClient, runtime: Runtime) -> None:
    response = chat(api)
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "gantry-small"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    provider = runtime.inference.provider(spec(runtime))
    messages = [Message(m["role"], m["content"]) for m in MESSAGES]
    usage = body["usage"]
    assert usage["prompt_tokens"] == provider.count_chat_tokens(spec(runtime), messages)
    assert (
        usage["completion_tokens"]
        == provider.count_tokens(spec(runtime), choice["message"]["content"])
        or choice["finish_reason"] == "length"
    )
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_metadata_headers(api: TestClient, runtime: Runtime) -> None:
    response = chat(api, max_tokens=8, seed=3)
    usage = response.json()["usage"]
    assert response.headers["x-model-version"] == "2026-11-01"
    expected = spec(runtime).cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
    assert abs(float(response.headers["x-cost-usd"]) - expected) < 1e-12
    assert response.headers["x-request-id"].startswith("req_")
    assert int(response.headers["openai-processing-ms"]) >= 0


def test_client_request_id_is_echoed_if_well_formed(api: TestClient) -> None:
    response = api.post(
        CHAT,
        json={"model": "gantry-echo", "messages": MESSAGES},
        headers={"x-request-id": "client-123"},
    )
    assert response.headers["x-request-id"] == "client-123"
    response = api.post(
        CHAT,
        json={"model": "gantry-echo", "messages": MESSAGES},
        headers={"x-request-id": "bad id with spaces"},
    )
    assert response.headers["x-request-id"].startswith("req_")


def test_seed_gives_the_same_output(api: TestClient) -> None:
    first = chat(api, seed=42, temperature=1.2, max_tokens=40).json()
    second = chat(api, seed=42, temperature=1.2, max_tokens=40).json()
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    outputs = {
        chat(api, seed=seed, temperature=1.2, max_tokens=40).json()["choices"][0]["message"][
            "content"
        ]
        for seed in range(5)
    }
    assert len(outputs) > 1


def test_max_tokens_gives_finish_reason_length(api: TestClient) -> None:
    body = chat(api, max_tokens=3, seed=1, logit_bias={}).json()
    assert body["usage"]["completion_tokens"] <= 3
    body = chat(api, max_completion_tokens=5, seed=7, temperature=0).json()
    choice = body["choices"][0]
    if choice["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 5


def test_n_choices(api: TestClient) -> None:
    body = chat(api, n=3, seed=5, max_tokens=20).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] >= 3


def test_stop_sequence_is_honoured(api: TestClient) -> None:
    free = chat(api, seed=11, max_tokens=60, temperature=0).json()["choices"][0]["message"]
    text = free["content"]
    words = text.split()
    assert len(words) > 3, text
    stop = words[2]
    body = chat(api, seed=11, max_tokens=60, temperature=0, stop=[stop]).json()
    choice = body["choices"][0]
    assert stop not in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    assert text.startswith(choice["message"]["content"].rstrip())


def test_logprobs(api: TestClient) -> None:
    body = chat(api, seed=2, max_tokens=6, logprobs=True, top_logprobs=3).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    for item in content:
        assert item["logprob"] <= 0
        assert len(item["top_logprobs"]) == 3
        tops = [t["logprob"] for t in item["top_logprobs"]]
        assert tops == sorted(tops, reverse=True)
        assert item["bytes"] == list(item["token"].encode())


def test_content_parts_are_joined(api: TestClient) -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}],
        }
    ]
    body = api.post(CHAT, json={"model": "gantry-echo", "messages": messages}).json()
    assert body["choices"][0]["message"]["content"] == "hello world"


def test_deprecated_model_carries_deprecation_headers(api: TestClient) -> None:
    response = api.post(
        CHAT, json={"model": "gantry-small-2025-06", "messages": MESSAGES, "max_tokens": 4}
    )
    assert response.status_code == 200
    assert response.headers["deprecation"].startswith("@")
    assert response.headers["sunset"].endswith("GMT")
    assert 'rel="successor-version"' in response.headers["link"]
    assert "/v1/models/gantry-small" in response.headers["link"]


def test_legacy_completions(api: TestClient) -> None:
    response = api.post(
        "/v1/completions",
        json={"model": "gantry-small", "prompt": ["The cloud", "A recipe"], "n": 2, "seed": 4},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert response.headers["deprecation"].startswith("@")
    assert "</v1/chat/completions>" in response.headers["link"]
    assert response.headers["sunset"]
    assert body["usage"]["completion_tokens"] <= 4 * 16  # default max_tokens is 16


def test_legacy_echo_best_of_and_logprobs(api: TestClient) -> None:
    echo = api.post(
        "/v1/completions",
        json={"model": "gantry-small", "prompt": "The weather", "echo": True, "max_tokens": 5},
    ).json()
    assert echo["choices"][0]["text"].startswith("The weather")
    best = api.post(
        "/v1/completions",
        json={
            "model": "gantry-small",
            "prompt": "The weather",
            "best_of": 4,
            "n": 2,
            "max_tokens": 5,
            "seed": 9,
            "logprobs": 2,
        },
    ).json()
    assert len(best["choices"]) == 2
    means = [
        sum(c["logprobs"]["token_logprobs"]) / max(1, len(c["logprobs"]["token_logprobs"]))
        for c in best["choices"]
    ]
    assert means == sorted(means, reverse=True)
    for choice in best["choices"]:
        lp = choice["logprobs"]
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"])
        assert all(len(t) <= 2 for t in lp["top_logprobs"])


def test_echo_model(api: TestClient) -> None:
    body = api.post(
        CHAT, json={"model": "gantry-echo", "messages": MESSAGES, "max_tokens": 3}
    ).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert "Tell me about".startswith(choice["message"]["content"].strip()[:4])
