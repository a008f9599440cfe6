"""The OpenAI-compatible provider against a real HTTP server on 127.0.0.1 that behaves like
one: normal answers, and slow, failing, malformed and dying ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gantry.adapters.openai_compatible import OpenAICompatibleProvider
from gantry.domain.deadlines import CallContext, Deadline, call_scope
from gantry.domain.errors import ContentPolicyViolation, ContextLengthExceeded, InvalidRequest
from gantry.domain.provider_errors import (
    ProviderMisconfigured,
    ProviderOutputInvalid,
    ProviderThrottled,
    ProviderTimeout,
    ProviderUnavailable,
)
from gantry.domain.registry import ModelSpec
from gantry.local.upstream import Behaviour, Upstream
from gantry.ports import ChoiceDone, Message, SamplingParams, TextDelta
from tests import support

MESSAGES = [Message("system", "Be brief."), Message("user", "tell me about the mountains")]
PARAMS = SamplingParams(max_tokens=16, temperature=0.5, stop=("END",), seed=3)


def model(upstream: Upstream, **options: Any) -> ModelSpec:
    return ModelSpec.from_dict(
        {
            "id": "vllm-test",
            "provider": "openai",
            "provider_model_id": "meta-llama/Llama-3.1-8B-Instruct",
            "version": "2025-01-01",
            "context_window": 8192,
            "max_output_tokens": 1024,
            "capabilities": ["chat", "completions", "embeddings", "moderations"],
            "tokenizer": "llama3",
            "provider_options": {"base_url": upstream.base_url, **options},
        }
    )


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture
def provider() -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(None, lambda: "sk-upstream", idle_timeout=5.0)


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    support.wait_until(condition, timeout, interval=0.01)


# --- answers ---------------------------------------------------------------------------------


def test_chat_sends_the_openai_request_and_bills_the_servers_usage(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    result = provider.chat(model(upstream), MESSAGES, PARAMS)
    (seen,) = upstream.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-upstream"
    assert seen.body["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert seen.body["messages"][1] == {"role": "user", "content": "tell me about the mountains"}
    assert (seen.body["max_tokens"], seen.body["stop"], seen.body["seed"]) == (16, ["END"], 3)
    assert seen.body["stream"] is False
    (choice,) = result.choices
    assert choice.text == "tell me about the mountains"
    assert (choice.finish_reason, choice.completion_tokens) == ("stop", 5)
    assert result.prompt_tokens == 7  # the server's count, not ours


def test_usage_missing_is_counted_with_the_tokenizer(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    upstream.queue(Behaviour(usage=False))
    spec = model(upstream)
    result = provider.chat(spec, MESSAGES, PARAMS)
    assert result.completion_tokens == provider.count_tokens(spec, "tell me about the mountains")
    assert result.prompt_tokens == provider.count_chat_tokens(spec, MESSAGES)


def test_text_completion_and_n_choices(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    result = provider.complete(model(upstream), "one two three", SamplingParams(max_tokens=2, n=2))
    assert upstream.requests[0].path == "/v1/completions"
    assert [c.text for c in result.choices] == ["one two", "one two"]
    assert [c.finish_reason for c in result.choices] == ["length", "length"]
    assert result.completion_tokens == 4


def test_max_tokens_field_option(upstream: Upstream, provider: OpenAICompatibleProvider) -> None:
    provider.chat(model(upstream, max_tokens_field="max_completion_tokens"), MESSAGES, PARAMS)
    body = upstream.requests[0].body
    assert body["max_completion_tokens"] == 16 and "max_tokens" not in body


def test_stream_yields_deltas_then_exact_usage(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    events = list(provider.chat_stream(model(upstream), MESSAGES, PARAMS))
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(texts) == "tell me about the mountains"
    assert events[-1] == ChoiceDone(0, "stop", 5)
    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}


def test_stream_with_two_choices_splits_the_servers_total(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    params = SamplingParams(max_tokens=3, n=2)
    events = list(provider.chat_stream(model(upstream), MESSAGES, params))
    done = [e for e in events if isinstance(e, ChoiceDone)]
    assert done == [ChoiceDone(0, "length", 3), ChoiceDone(1, "length", 3)]


def test_content_filter_finish_reason_passes_through(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    upstream.queue(Behaviour(finish_reason="content_filter"))
    assert provider.chat(model(upstream), MESSAGES, PARAMS).choices[0].finish_reason == (
        "content_filter"
    )


def test_embeddings_batch_to_the_per_call_limit_and_truncate(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    texts = ["a b", "c", "d e f", "g", "h"]
    result = provider.embed(model(upstream, max_batch=2), texts, 4)
    assert [len(r.body["input"]) for r in upstream.requests] == [2, 2, 1]
    assert len(result.vectors) == 5 and all(len(v) == 4 for v in result.vectors)
    assert abs(sum(x * x for x in result.vectors[0]) - 1.0) < 1e-9
    assert result.prompt_tokens == 8


def test_moderation(upstream: Upstream, provider: OpenAICompatibleProvider) -> None:
    result = provider.moderate(model(upstream), ["hello", "attack now"])
    assert [v.flagged for v in result.results] == [False, True]


def test_no_base_url_is_a_configuration_error(provider: OpenAICompatibleProvider) -> None:
    spec = ModelSpec.from_dict(
        {
            "id": "nowhere",
            "provider": "openai",
            "version": "1",
            "context_window": 10,
            "max_output_tokens": 5,
            "capabilities": ["chat"],
        }
    )
    with pytest.raises(ProviderMisconfigured):
        provider.chat(spec, MESSAGES, PARAMS)


# --- failures --------------------------------------------------------------------------------

TOO_LONG = (
    b'{"error": {"message": "This model\'s maximum context length is 8192 tokens. However, '
    b'you requested 9000 tokens.", "type": "invalid_request_error", "code": null}}'
)
POLICY = (
    b'{"error": {"message": "Your request was rejected as a result of our safety system.", '
    b'"type": "invalid_request_error", "code": "content_policy_violation"}}'
)


@pytest.mark.parametrize(
    ("behaviour", "expected", "reason"),
    [
        (
            Behaviour(status=429, headers={"retry-after": "3"}),
            ProviderThrottled,
            "provider_throttled",
        ),
        (Behaviour(status=500), ProviderUnavailable, "provider_error"),
        (Behaviour(status=503), ProviderUnavailable, "provider_error"),
        (Behaviour(reset=True), ProviderUnavailable, "connection_reset"),
        (Behaviour(body=b'{"choices": "nope"'), ProviderOutputInvalid, None),
        (Behaviour(body=b'{"object": "chat.completion"}'), ProviderOutputInvalid, None),
        (Behaviour(status=400, body=TOO_LONG), ContextLengthExceeded, None),
        (Behaviour(status=400, body=POLICY), ContentPolicyViolation, None),
        (Behaviour(status=401), ProviderMisconfigured, "provider_configuration"),
        (Behaviour(status=404), ProviderMisconfigured, "provider_configuration"),
        (Behaviour(status=422, body=b'{"detail": "bad"}'), InvalidRequest, None),
    ],
)
def test_buffered_failures_map_to_domain_errors(
    upstream: Upstream,
    provider: OpenAICompatibleProvider,
    behaviour: Behaviour,
    expected: type[Exception],
    reason: str | None,
) -> None:
    upstream.queue(behaviour)
    with pytest.raises(expected) as raised:
        provider.chat(model(upstream), MESSAGES, PARAMS)
    error: Any = raised.value
    if reason is not None:
        assert error.details["reason"] == reason
    if expected is ProviderThrottled:
        assert error.retry_after == 3.0 and error.transient
    if expected is InvalidRequest:
        assert error.code == "model_rejected_request"


def test_streamed_failures_before_the_first_token(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    upstream.queue(Behaviour(status=400, body=TOO_LONG))
    with pytest.raises(ContextLengthExceeded):
        list(provider.chat_stream(model(upstream), MESSAGES, PARAMS))


def test_a_slow_server_times_out_at_the_deadline_and_is_hung_up_on(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    upstream.queue(Behaviour(delay=2.0))
    started = time.monotonic()
    with (
        call_scope(CallContext(Deadline.after(0.2, time.monotonic))),
        pytest.raises(ProviderTimeout) as raised,
    ):
        provider.chat(model(upstream), MESSAGES, PARAMS)
    assert time.monotonic() - started < 1.5
    assert raised.value.details["timeout_seconds"] <= 0.2  # type: ignore[index]
    wait_until(lambda: upstream.disconnects == 1)  # the connection was closed, not left open


def test_a_stream_that_dies_half_way(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    upstream.queue(Behaviour(die_after=2))
    seen: list[Any] = []
    with pytest.raises(ProviderUnavailable):
        for event in provider.chat_stream(model(upstream), MESSAGES, PARAMS):
            seen.append(event)
    assert [e.text for e in seen] == ["tell", " me"]


def test_an_error_event_mid_stream(upstream: Upstream, provider: OpenAICompatibleProvider) -> None:
    upstream.queue(Behaviour(error_after=1))
    with pytest.raises(ProviderUnavailable) as raised:
        list(provider.chat_stream(model(upstream), MESSAGES, PARAMS))
    assert raised.value.details["reason"] == "stream_error"  # type: ignore[index]


def test_a_malformed_stream_event(upstream: Upstream, provider: OpenAICompatibleProvider) -> None:
    upstream.queue(
        Behaviour(body=b"data: {broken\n\n", headers={"content-type": "text/event-stream"})
    )
    with pytest.raises(ProviderOutputInvalid):
        list(provider.chat_stream(model(upstream), MESSAGES, PARAMS))


def test_a_stalled_stream_times_out(upstream: Upstream) -> None:
    provider = OpenAICompatibleProvider(None, idle_timeout=0.2)
    upstream.queue(Behaviour(chunk_delay=2.0))
    with pytest.raises(ProviderTimeout):
        list(provider.chat_stream(model(upstream), MESSAGES, PARAMS))
    wait_until(lambda: upstream.disconnects == 1)


def test_closing_a_stream_cancels_the_upstream_call(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    upstream.queue(Behaviour(chunk_delay=0.5))
    events = provider.chat_stream(model(upstream), MESSAGES, PARAMS)
    assert isinstance(next(events), TextDelta)
    events.close()  # type: ignore[attr-defined]
    wait_until(lambda: upstream.disconnects == 1)
    assert upstream.completed == 0


def test_cancelling_a_buffered_call_hangs_up(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    upstream.queue(Behaviour(delay=5.0))
    context = CallContext(Deadline.after(10, time.monotonic))

    def cancel_once_sent() -> None:
        wait_until(lambda: upstream.received >= 1)
        context.cancel.cancel()

    threading.Thread(target=cancel_once_sent, daemon=True).start()
    with call_scope(context), pytest.raises(ProviderUnavailable) as raised:
        provider.chat(model(upstream), MESSAGES, PARAMS)
    assert raised.value.details["reason"] == "cancelled"  # type: ignore[index]
    wait_until(lambda: upstream.disconnects == 1)
    # The aborted connection is dropped; the pool keeps serving.
    assert provider.chat(model(upstream), MESSAGES, PARAMS).choices[0].text


def test_a_call_cancelled_before_it_starts_sends_nothing(
    upstream: Upstream, provider: OpenAICompatibleProvider
) -> None:
    provider.chat(model(upstream), MESSAGES, PARAMS)  # a pooled connection is ready
    context = CallContext(Deadline.after(10, time.monotonic))
    context.cancel.cancel()
    with call_scope(context), pytest.raises(ProviderUnavailable) as raised:
        provider.chat(model(upstream), MESSAGES, PARAMS)
    assert raised.value.details["reason"] == "cancelled"  # type: ignore[index]
    assert len(upstream.requests) == 1


def test_buffered_calls_go_through_the_environments_proxy(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upstream stands in for the proxy: it answers the absolute-form request itself.
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://{upstream.host}:{upstream.port}")
    provider = OpenAICompatibleProvider("http://vllm.internal:8000/v1", idle_timeout=5.0)
    spec = model(upstream, base_url="http://vllm.internal:8000/v1")
    assert provider.chat(spec, MESSAGES, PARAMS).choices[0].text
    (seen,) = upstream.requests
    assert seen.path == "http://vllm.internal:8000/v1/chat/completions"
