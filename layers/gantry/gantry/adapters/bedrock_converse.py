"""Converse and ConverseStream: request shapes, responses, stop reasons.

Messages: `system` and `developer` become system blocks; `tool` messages are sent as user
text; consecutive messages of one role are merged (Bedrock wants turns that alternate and
start with the user). `inferenceConfig` carries maxTokens, temperature (Bedrock's models
take 0 to 1: higher values are capped at 1), topP when below 1 and stopSequences. A model's
`provider_options.guardrail` (`{"id": ..., "version": ...}`) adds `guardrailConfig`;
`provider_options.additional_request_fields` is passed through (e.g. `{"top_k": 50}`).

Stop reasons: end_turn and stop_sequence are `stop`; max_tokens and
model_context_window_exceeded `length`; content_filtered `content_filter`; tool_use
`tool_calls`; guardrail_intervened is `content_filter` when the guardrail acted on the
output, and a 400 `content_policy_violation` when it blocked the input (nothing generated);
malformed_model_output is 502 `model_output_invalid`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gantry.adapters.provider_refusals import policy_refused
from gantry.domain.errors import InvalidRequest
from gantry.domain.provider_errors import ProviderOutputInvalid
from gantry.domain.registry import ModelSpec
from gantry.ports import Message, SamplingParams

FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "tool_use": "tool_calls",
}
MALFORMED = {"malformed_model_output", "malformed_tool_use"}
GUARDRAIL = "guardrail_intervened"


def converse_request(
    spec: ModelSpec, messages: Sequence[Message], params: SamplingParams, stream: bool = False
) -> dict[str, Any]:
    system = [{"text": m.content} for m in messages if m.role in ("system", "developer")]
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer") or not message.content:
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].append({"text": message.content})
        else:
            turns.append({"role": role, "content": [{"text": message.content}]})
    if not turns or turns[0]["role"] != "user":
        raise InvalidRequest(
            f"The model '{spec.id}' needs the conversation to start with a user message.",
            code="invalid_value",
            param="messages",
        )
    config: dict[str, Any] = {
        "maxTokens": params.max_tokens,
        "temperature": min(1.0, params.temperature),
    }
    if params.top_p < 1.0:
        config["topP"] = params.top_p
    if params.stop:
        config["stopSequences"] = list(params.stop)
    request: dict[str, Any] = {
        "modelId": spec.provider_model_id,
        "messages": turns,
        "inferenceConfig": config,
    }
    if system:
        request["system"] = [block for block in system if block["text"]]
    guardrail = guardrail_config(spec)
    if guardrail is not None:
        if stream:
            guardrail["streamProcessingMode"] = str(
                spec.provider_options.get("guardrail_stream_mode", "sync")
            )
        request["guardrailConfig"] = guardrail
    extra = spec.provider_options.get("additional_request_fields")
    if isinstance(extra, Mapping):
        request["additionalModelRequestFields"] = dict(extra)
    return request


def guardrail_config(spec: ModelSpec) -> dict[str, Any] | None:
    guardrail = spec.provider_options.get("guardrail")
    if not isinstance(guardrail, Mapping) or not guardrail.get("id"):
        return None
    return {
        "guardrailIdentifier": str(guardrail["id"]),
        "guardrailVersion": str(guardrail.get("version", "DRAFT")),
        "trace": "enabled",
    }


def _blocked(node: Any) -> bool:
    """Whether any policy in a guardrail assessment BLOCKED something."""
    if isinstance(node, Mapping):
        return node.get("action") == "BLOCKED" or any(_blocked(v) for v in node.values())
    if isinstance(node, list):
        return any(_blocked(v) for v in node)
    return False


def input_blocked(trace: Any) -> bool | None:
    """True/False from the guardrail trace's input assessment; None without a trace."""
    if not isinstance(trace, Mapping) or not isinstance(trace.get("guardrail"), Mapping):
        return None
    return _blocked(trace["guardrail"].get("inputAssessment"))


def finish_reason(
    spec: ModelSpec, stop_reason: Any, trace: Any, output_tokens: int, input_checked: bool = False
) -> str:
    """The OpenAI finish reason for a Bedrock stop reason (or the refusal it means)."""
    if stop_reason in MALFORMED:
        raise ProviderOutputInvalid(
            f"The model '{spec.id}' produced malformed output ({stop_reason}). Retry; if it "
            "persists, use another model."
        )
    if stop_reason == GUARDRAIL:
        blocked = input_blocked(trace)
        if not input_checked and (blocked or (blocked is None and output_tokens == 0)):
            raise policy_refused()
        return "content_filter"
    return FINISH.get(str(stop_reason), "stop")


def parse_converse(spec: ModelSpec, response: Mapping[str, Any]) -> tuple[str, str, int, int]:
    """(text, finish reason, input tokens, output tokens) of a Converse response."""
    output = response.get("output")
    message = output.get("message") if isinstance(output, Mapping) else None
    if not isinstance(message, Mapping) or not isinstance(message.get("content"), list):
        raise invalid_response(spec, "no output message")
    text = "".join(
        str(block["text"])
        for block in message["content"]
        if isinstance(block, Mapping) and isinstance(block.get("text"), str)
    )
    usage = response.get("usage")
    if not isinstance(usage, Mapping) or not isinstance(usage.get("outputTokens"), int):
        raise invalid_response(spec, "no usage")
    output_tokens = int(usage["outputTokens"])
    input_tokens = int(usage.get("inputTokens") or 0)
    finish = finish_reason(spec, response.get("stopReason"), response.get("trace"), output_tokens)
    return text, finish, input_tokens, output_tokens


def invalid_response(spec: ModelSpec, what: str) -> ProviderOutputInvalid:
    return ProviderOutputInvalid(
        f"Bedrock returned an invalid response for '{spec.id}' ({what}). Retry; if it "
        "persists, use another model."
    )
