"""The Bedrock provider against Bedrock's API shapes: botocore's Stubber (which validates
requests and responses against the service model) for buffered calls, and a wire-level fake
for event streams and broken connections."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from gantry.adapters.bedrock import BedrockProvider
from gantry.domain.errors import ContentPolicyViolation, ContextLengthExceeded, InvalidRequest
from gantry.domain.provider_errors import (
    ProviderMisconfigured,
    ProviderOutputInvalid,
    ProviderThrottled,
    ProviderTimeout,
    ProviderUnavailable,
)
from gantry.domain.registry import ModelSpec
from gantry.ports import ChoiceDone, Message, SamplingParams, TextDelta
from tests.bedrock_wire import (
    BedrockWire,
    Reply,
    converse_body,
    error,
    exception_event,
    ok,
    stream,
    stream_events,
)


def spec(**extra: Any) -> ModelSpec:
    raw = {
        "id": "claude-test",
        "provider": "bedrock",
        "provider_model_id": "anthropic.claude-3-haiku-20240307-v1:0",
        "version": "2024-03-07",
        "context_window": 200000,
        "max_output_tokens": 4096,
        "capabilities": ["chat", "completions", "embeddings", "moderations"],
        "tokenizer": "estimate",
        **extra,
    }
    return ModelSpec.from_dict(raw)


CLAUDE = spec()
GUARDED = spec(id="claude-guarded", provider_options={"guardrail": {"id": "gr-1", "version": "2"}})
TITAN = spec(
    id="titan", provider_model_id="amazon.titan-embed-text-v2:0", embedding_dimensions=1024
)
COHERE = spec(id="cohere", provider_model_id="cohere.embed-english-v3")
MESSAGES = [Message("system", "Be brief."), Message("user", "Hello"), Message("user", "there")]
PARAMS = SamplingParams(max_tokens=50, temperature=1.5, top_p=0.9, stop=("END",))


@pytest.fixture
def stubbed() -> Iterator[tuple[BedrockProvider, Stubber]]:
    client = boto3.session.Session().client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield BedrockProvider(lambda: client), stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def wire() -> BedrockWire:
    return BedrockWire()


def provider_for(wire: BedrockWire) -> BedrockProvider:
    return BedrockProvider(lambda: wire.client)


# --- Converse ---------------------------------------------------------------------------------


def test_converse_sends_system_turns_and_inference_config(
    stubbed: tuple[BedrockProvider, Stubber],
) -> None:
    provider, stubber = stubbed
    expected = {
        "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
        "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "Hello"}, {"text": "there"}]}],
        "inferenceConfig": {
            "maxTokens": 50,
            "temperature": 1.0,  # Bedrock's models take 0..1
            "topP": 0.9,
            "stopSequences": ["END"],
        },
    }
    stubber.add_response("converse", converse_body("Hi!", "end_turn", 14, 3), expected)
    result = provider.chat(CLAUDE, MESSAGES, PARAMS)
    assert result.prompt_tokens == 14  # Bedrock's counts are what is billed
    (choice,) = result.choices
    assert (choice.text, choice.finish_reason, choice.completion_tokens) == ("Hi!", "stop", 3)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("content_filtered", "content_filter"),
        ("tool_use", "tool_calls"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(
    stubbed: tuple[BedrockProvider, Stubber], stop: str, finish: str
) -> None:
    provider, stubber = stubbed
    stubber.add_response("converse", converse_body("x", stop))
    assert provider.chat(CLAUDE, MESSAGES, PARAMS).choices[0].finish_reason == finish


def test_guardrail_on_the_output_is_content_filter(
    stubbed: tuple[BedrockProvider, Stubber],
) -> None:
    provider, stubber = stubbed
    trace = {"guardrail": {"inputAssessment": {"gr-1": {}}, "outputAssessments": {"gr-1": []}}}
    expected = {
        "modelId": ANY,
        "messages": ANY,
        "system": ANY,
        "inferenceConfig": ANY,
        "guardrailConfig": {
            "guardrailIdentifier": "gr-1",
            "guardrailVersion": "2",
            "trace": "enabled",
        },
    }
    stubber.add_response(
        "converse", converse_body("[removed]", "guardrail_intervened", 10, 4, trace), expected
    )
    assert provider.chat(GUARDED, MESSAGES, PARAMS).choices[0].finish_reason == "content_filter"


def test_guardrail_blocking_the_input_is_a_policy_violation(
    stubbed: tuple[BedrockProvider, Stubber],
) -> None:
    provider, stubber = stubbed
    blocked = {
        "contentPolicy": {
            "filters": [
                {"type": "VIOLENCE", "confidence": "HIGH", "action": "BLOCKED", "detected": True}
            ]
        }
    }
    trace = {"guardrail": {"inputAssessment": {"gr-1": blocked}}}
    stubber.add_response("converse", converse_body("Sorry.", "guardrail_intervened", 10, 0, trace))
    with pytest.raises(ContentPolicyViolation) as refused:
        provider.chat(GUARDED, MESSAGES, PARAMS)
    assert refused.value.details is None  # nothing that helps get around the filter


def test_n_choices_are_one_call_each(stubbed: tuple[BedrockProvider, Stubber]) -> None:
    provider, stubber = stubbed
    stubber.add_response("converse", converse_body("one", "end_turn", 9, 1))
    stubber.add_response("converse", converse_body("two two", "max_tokens", 9, 2))
    result = provider.chat(CLAUDE, MESSAGES, SamplingParams(max_tokens=2, n=2))
    assert [c.text for c in result.choices] == ["one", "two two"]
    assert [c.finish_reason for c in result.choices] == ["stop", "length"]
    assert result.prompt_tokens == 9 and result.completion_tokens == 3


@pytest.mark.parametrize(
    ("code", "status", "message", "expected"),
    [
        ("ThrottlingException", 429, "Too many requests", ProviderThrottled),
        ("ModelNotReadyException", 429, "Model is not ready", ProviderThrottled),
        ("ModelTimeoutException", 408, "Model timed out", ProviderTimeout),
        ("InternalServerException", 500, "Internal error", ProviderUnavailable),
        ("ServiceUnavailableException", 503, "Unavailable", ProviderUnavailable),
        ("ModelErrorException", 424, "The model failed", ProviderUnavailable),
        ("AccessDeniedException", 403, "Not authorized", ProviderMisconfigured),
        (
            "ValidationException",
            400,
            "Input is too long for requested model.",
            ContextLengthExceeded,
        ),
        ("ValidationException", 400, "temperature out of range", InvalidRequest),
    ],
)
def test_service_exceptions_become_domain_errors(
    stubbed: tuple[BedrockProvider, Stubber],
    code: str,
    status: int,
    message: str,
    expected: type[Exception],
) -> None:
    provider, stubber = stubbed
    stubber.add_client_error(
        "converse", service_error_code=code, service_message=message, http_status_code=status
    )
    with pytest.raises(expected) as raised:
        provider.chat(CLAUDE, MESSAGES, PARAMS)
    if expected is InvalidRequest:
        assert getattr(raised.value, "code", None) == "model_rejected_request"
    if expected is ContextLengthExceeded:
        assert raised.value.details["context_window"] == 200000  # type: ignore[attr-defined]


def test_transient_errors_are_marked_for_retry(stubbed: tuple[BedrockProvider, Stubber]) -> None:
    provider, stubber = stubbed
    stubber.add_client_error("converse", "ThrottlingException", "slow down", 429)
    with pytest.raises(ProviderThrottled) as throttled:
        provider.chat(CLAUDE, MESSAGES, PARAMS)
    assert throttled.value.transient and throttled.value.retryable
    assert throttled.value.retry_after is not None
    assert throttled.value.details == {
        "subsystem": "model_provider",
        "reason": "provider_throttled",
    }


def test_a_response_without_output_is_invalid_output(wire: BedrockWire) -> None:
    wire.queue(
        ok(
            {
                "stopReason": "end_turn",
                "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
                "metrics": {"latencyMs": 1},
            }
        )
    )
    with pytest.raises(ProviderOutputInvalid):
        provider_for(wire).chat(CLAUDE, MESSAGES, PARAMS)


def test_malformed_model_output_stop_reason_is_invalid_output(
    stubbed: tuple[BedrockProvider, Stubber],
) -> None:
    provider, stubber = stubbed
    stubber.add_response("converse", converse_body("{{", "malformed_model_output"))
    with pytest.raises(ProviderOutputInvalid):
        provider.chat(CLAUDE, MESSAGES, PARAMS)


@pytest.mark.parametrize(
    ("failure", "expected", "reason"),
    [
        (ReadTimeoutError(endpoint_url="https://bedrock"), ProviderTimeout, None),
        (
            ConnectionClosedError(endpoint_url="https://bedrock"),
            ProviderUnavailable,
            "connection_reset",
        ),
    ],
)
def test_connection_failures(
    wire: BedrockWire, failure: Exception, expected: type[Exception], reason: str | None
) -> None:
    wire.queue(Reply(raise_=failure))
    with pytest.raises(expected) as raised:
        provider_for(wire).chat(CLAUDE, MESSAGES, PARAMS)
    if reason is not None:
        assert raised.value.details["reason"] == reason  # type: ignore[attr-defined]


# --- ConverseStream --------------------------------------------------------------------------


def test_stream_yields_text_then_exact_usage(wire: BedrockWire) -> None:
    wire.queue(stream(*stream_events(["Hel", "lo", " world"], "end_turn", 12, 4)))
    events = list(provider_for(wire).chat_stream(CLAUDE, MESSAGES, PARAMS))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo", " world"]
    assert events[-1] == ChoiceDone(0, "stop", 4)
    assert wire.requests[0].operation == "converse-stream"
    assert wire.requests[0].body["inferenceConfig"]["maxTokens"] == 50


def test_stream_exception_event_mid_stream(wire: BedrockWire) -> None:
    chunks = [*stream_events(["a", "b"])[:4], exception_event("throttlingException", "slow")]
    wire.queue(stream(*chunks))
    seen: list[Any] = []
    with pytest.raises(ProviderThrottled):
        for item in provider_for(wire).chat_stream(CLAUDE, MESSAGES, PARAMS):
            seen.append(item)
    assert [e.text for e in seen] == ["a", "b"]  # what came before the failure was delivered


def test_stream_that_dies_half_way(wire: BedrockWire) -> None:
    chunks = stream_events(["a", "b", "c"])[:3]
    wire.queue(stream(*chunks, fail=ConnectionClosedError(endpoint_url="https://bedrock")))
    seen: list[Any] = []
    with pytest.raises(ProviderUnavailable):
        for item in provider_for(wire).chat_stream(CLAUDE, MESSAGES, PARAMS):
            seen.append(item)
    assert len(seen) == 2


def test_stream_cut_before_message_stop(wire: BedrockWire) -> None:
    wire.queue(stream(*stream_events(["a"])[:3]))
    with pytest.raises(ProviderUnavailable) as raised:
        list(provider_for(wire).chat_stream(CLAUDE, MESSAGES, PARAMS))
    assert raised.value.details["reason"] == "stream_interrupted"  # type: ignore[index]


def test_stream_error_before_any_event_is_mapped(wire: BedrockWire) -> None:
    wire.queue(error("ValidationException", "Input is too long for requested model.", 400))
    with pytest.raises(ContextLengthExceeded):
        list(provider_for(wire).chat_stream(CLAUDE, MESSAGES, PARAMS))


def test_guarded_stream_checks_the_input_first(wire: BedrockWire) -> None:
    wire.queue(ok(_guardrail_response("GUARDRAIL_INTERVENED", "BLOCKED")))
    with pytest.raises(ContentPolicyViolation):
        list(provider_for(wire).chat_stream(GUARDED, MESSAGES, PARAMS))
    assert [r.operation for r in wire.requests] == ["apply"]  # the model was never called


def test_guarded_stream_filters_the_output(wire: BedrockWire) -> None:
    wire.queue(
        ok(_guardrail_response("NONE", "NONE")),
        stream(*stream_events(["fine", " [removed]"], "guardrail_intervened", 10, 2)),
    )
    events = list(provider_for(wire).chat_stream(GUARDED, MESSAGES, PARAMS))
    assert events[-1] == ChoiceDone(0, "content_filter", 2)
    body = wire.requests[1].body
    assert body["guardrailConfig"]["streamProcessingMode"] == "sync"


def test_text_completion_is_one_user_turn(wire: BedrockWire) -> None:
    wire.queue(stream(*stream_events(["ok"])))
    list(provider_for(wire).complete_stream(CLAUDE, "Once upon", PARAMS))
    assert wire.requests[0].body["messages"] == [
        {"role": "user", "content": [{"text": "Once upon"}]}
    ]


# --- embeddings and moderation ----------------------------------------------------------------


def _body(payload: dict[str, Any], tokens: int | None = None) -> dict[str, Any]:
    raw = json.dumps(payload).encode()
    response: dict[str, Any] = {
        "body": StreamingBody(io.BytesIO(raw), len(raw)),
        "contentType": "application/json",
    }
    if tokens is not None:
        response["ResponseMetadata"] = {
            "HTTPStatusCode": 200,
            "HTTPHeaders": {"x-amzn-bedrock-input-token-count": str(tokens)},
        }
    return response


def test_titan_v2_embeds_one_text_per_call(stubbed: tuple[BedrockProvider, Stubber]) -> None:
    provider, stubber = stubbed
    for text, vector in (("alpha", [0.6, 0.8, 0.0]), ("beta", [0.0, 0.0, 1.0])):
        stubber.add_response(
            "invoke_model",
            _body({"embedding": vector, "inputTextTokenCount": 2}),
            {
                "modelId": "amazon.titan-embed-text-v2:0",
                "body": json.dumps(
                    {"inputText": text, "dimensions": 256, "normalize": True}
                ).encode(),
                "contentType": "application/json",
                "accept": "application/json",
            },
        )
    provider._threads = 1  # keep the stubbed order
    result = provider.embed(TITAN, ["alpha", "beta"], 2)
    assert result.prompt_tokens == 4
    assert result.vectors[0] == (0.6, 0.8)  # truncated and still unit length
    assert result.vectors[1] == (0.0, 0.0)


def test_cohere_batches_96_texts_per_call(wire: BedrockWire) -> None:
    texts = [f"text {i}" for i in range(100)]
    wire.queue(
        ok(
            {
                "embeddings": [[1.0, 0.0]] * 96,
                "id": "a",
                "response_type": "embeddings_floats",
                "texts": texts[:96],
            },
            {"x-amzn-bedrock-input-token-count": "192"},
        ),
        ok(
            {
                "embeddings": {"float": [[0.0, 1.0]] * 4},
                "id": "b",
                "response_type": "embeddings_by_type",
                "texts": texts[96:],
            },
            {"x-amzn-bedrock-input-token-count": "8"},
        ),
    )
    provider = provider_for(wire)
    provider._threads = 1
    result = provider.embed(COHERE, texts, None)
    assert len(result.vectors) == 100 and result.prompt_tokens == 200
    assert [len(r.body["texts"]) for r in wire.requests] == [96, 4]
    assert wire.requests[0].body["input_type"] == "search_document"


def test_embedding_body_that_is_not_json_is_invalid_output(
    stubbed: tuple[BedrockProvider, Stubber],
) -> None:
    provider, stubber = stubbed
    raw = b"<html>oops</html>"
    stubber.add_response(
        "invoke_model",
        {"body": StreamingBody(io.BytesIO(raw), len(raw)), "contentType": "text/html"},
    )
    with pytest.raises(ProviderOutputInvalid):
        provider.embed(TITAN, ["alpha"], None)


def _guardrail_response(action: str, filter_action: str) -> dict[str, Any]:
    return {
        "usage": {
            "topicPolicyUnits": 1,
            "contentPolicyUnits": 1,
            "wordPolicyUnits": 1,
            "sensitiveInformationPolicyUnits": 1,
            "sensitiveInformationPolicyFreeUnits": 0,
            "contextualGroundingPolicyUnits": 0,
        },
        "action": action,
        "outputs": [{"text": "Sorry, I cannot help with that."}] if action != "NONE" else [],
        "assessments": [
            {
                "contentPolicy": {
                    "filters": [
                        {
                            "type": "VIOLENCE",
                            "confidence": "HIGH",
                            "action": filter_action,
                            "detected": filter_action == "BLOCKED",
                        },
                        {
                            "type": "INSULTS",
                            "confidence": "LOW",
                            "action": "NONE",
                            "detected": False,
                        },
                    ]
                }
            }
        ],
    }


def test_moderation_through_apply_guardrail(stubbed: tuple[BedrockProvider, Stubber]) -> None:
    provider, stubber = stubbed
    stubber.add_response(
        "apply_guardrail",
        _guardrail_response("GUARDRAIL_INTERVENED", "BLOCKED"),
        {
            "guardrailIdentifier": "gr-1",
            "guardrailVersion": "2",
            "source": "INPUT",
            "content": [{"text": {"text": "I will attack you"}}],
        },
    )
    result = provider.moderate(GUARDED, ["I will attack you"])
    (verdict,) = result.results
    assert verdict.flagged and verdict.categories["violence"]
    assert verdict.category_scores["violence"] == 0.9
    assert verdict.category_scores["harassment"] == 0.35 and not verdict.categories["harassment"]
    assert set(verdict.categories) >= {"hate", "sexual", "self-harm", "violence/graphic"}
