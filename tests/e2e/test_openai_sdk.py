"""The official `openai` package, pointed at a live local server, works unchanged."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.e2e.conftest import LiveServer


@pytest.fixture
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live_server.base_url}/v1", api_key=live_server.api_key, max_retries=0
    )


def test_chat_completion(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gantry-small",
        messages=[{"role": "user", "content": "What is the weather like today?"}],
        max_tokens=20,
        seed=7,
    )
    assert completion.object == "chat.completion"
    text = completion.choices[0].message.content
    assert text
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= 20
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    again = client.chat.completions.create(
        model="gantry-small",
        messages=[{"role": "user", "content": "What is the weather like today?"}],
        max_tokens=20,
        seed=7,
    )
    assert again.choices[0].message.content == text


def test_text_completion(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="gantry-small", prompt="The cloud", max_tokens=8)
    assert completion.choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens <= 8


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="gantry-embed-small", input=["hello", "world"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 256
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0
    # The SDK asks for base64 by default when numpy is absent or present; both decode.
    short = client.embeddings.create(model="gantry-embed-small", input="hello", dimensions=32)
    assert len(short.data[0].embedding) == 32


def test_models(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert "gantry-small" in ids
    assert client.models.retrieve("gantry-small").id == "gantry-small"


def test_moderations(client: openai.OpenAI) -> None:
    result = client.moderations.create(input="I will kill you")
    assert result.results[0].flagged
    assert result.results[0].categories.violence


def test_wrong_key_is_authentication_error(live_server: LiveServer) -> None:
    bad = openai.OpenAI(
        base_url=f"{live_server.base_url}/v1",
        api_key="gnt_e2etest01_WrongSecretWrongSecret00000000",
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


def test_invalid_parameter_is_bad_request_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gantry-small",
            messages=[{"role": "user", "content": "hi"}],
            temperature=3.5,
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "temperature"
    assert body["code"] == "invalid_value"
    assert caught.value.request_id


def test_batches(client: openai.OpenAI) -> None:
    """Upload, create, poll and read the output, all through the SDK against `gantry dev`
    (its state machine runs in moto, its batch worker on a thread)."""
    questions = {f"q{i}": f"question {i} about the sea" for i in range(12)}
    lines = [
        json.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gantry-echo", "messages": [{"role": "user", "content": text}]},
            }
        )
        for custom_id, text in questions.items()
    ]
    source = client.files.create(
        file=("requests.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "validating"
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 12
    assert batch.output_file_id is not None
    output = client.files.content(batch.output_file_id).text.splitlines()
    answers = {
        entry["custom_id"]: entry["response"]["body"]["choices"][0]["message"]["content"]
        for entry in map(json.loads, output)
    }
    assert answers == questions
    assert batch.id in [b.id for b in client.batches.list(limit=100)]
