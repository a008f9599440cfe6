"""Every sample event in events/ runs through its real Lambda handler with the expected status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gantry.local.invoke import (
    LocalContext,
    is_streaming,
    load_app,
    load_handler,
    prepare_environment,
    stream_event,
)
from gantry.local.moto_env import EXAMPLE_API_KEY, key_record
from gantry.runtime import Runtime

EVENTS = Path(__file__).resolve().parents[2] / "events"

EXPECTED = {
    "completions/chat_completion.json": 200,
    "completions/chat_completion_logprobs.json": 200,
    "completions/chat_completion_echo.json": 200,
    "completions/chat_bad_temperature.json": 400,
    "completions/chat_unknown_model.json": 404,
    "completions/chat_unsupported_tools.json": 400,
    "completions/chat_missing_key.json": 401,
    "completions/chat_malformed_json.json": 400,
    "completions/chat_wrong_content_type.json": 415,
    "completions/completion_legacy.json": 200,
    "completions/chat_completion_stream.json": 200,
    "completions/completion_legacy_stream.json": 200,
    "completions/v2_chat_completion.json": 200,
    "completions/v2_chat_completion_stream.json": 200,
    "completions/chat_completion_idempotent.json": 200,
    "inference/embeddings.json": 200,
    "inference/embeddings_base64.json": 200,
    "inference/embeddings_empty_input.json": 400,
    "inference/classification.json": 200,
    "inference/moderation.json": 200,
    "inference/embeddings_fields.json": 200,
    "inference/embeddings_bad_cache_control.json": 400,
    "keys/create_key.json": 200,
    "keys/list_keys.json": 200,
    "keys/get_unknown_key.json": 404,
    "keys/create_key_unknown_scope.json": 400,
    "models/list_models.json": 200,
    "models/get_model.json": 200,
    "models/get_unknown_model.json": 404,
    "models/list_models_bad_key.json": 401,
    "models/health.json": 200,
    "models/openapi.json": 200,
    "models/docs.json": 200,
    "models/error_codes.json": 200,
    "models/versioning.json": 200,
    "usage/get_usage.json": 200,
    "usage/get_usage_hourly.json": 200,
    "usage/get_usage_bad_bucket_width.json": 400,
    "files/list_files.json": 200,
    "files/get_unknown_file.json": 404,
    "fine_tuning/list_jobs.json": 200,
    "fine_tuning/create_job_unknown_model.json": 404,
    "batches/list_batches.json": 200,
    "batches/get_unknown_batch.json": 404,
    "batches/cancel_unknown_batch.json": 404,
    "batches/create_batch_unknown_file.json": 404,
    "webhooks/list_webhooks.json": 200,
    "webhooks/create_webhook_metadata_url.json": 400,
    "conversations/create_conversation.json": 200,
    "conversations/create_conversation_unknown_strategy.json": 400,
    "conversations/get_unknown_conversation.json": 404,
    "conversations/list_messages_unknown_conversation.json": 404,
    "conversations/delete_unknown_conversation.json": 404,
    "completions/conversation_message_unknown.json": 404,
}


def test_every_event_is_listed() -> None:
    found = {str(p.relative_to(EVENTS)) for p in EVENTS.glob("*/*.json")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED.items()))
def test_event(runtime: Runtime, name: str, status: int) -> None:
    prepare_environment()
    runtime.key_store.put_key(key_record(EXAMPLE_API_KEY, runtime.pepper()))
    function = name.split("/")[0]
    functions_dir = str(EVENTS.parent / "functions")
    event = json.loads((EVENTS / name).read_text())
    if is_streaming(function, functions_dir):
        streamed = asyncio.run(stream_event(load_app(function, functions_dir), event))
        status_code, headers, body = streamed.status, streamed.headers, streamed.body.decode()
    else:
        handler = load_handler(function, functions_dir)
        response = handler(event, LocalContext(function_name=f"gantry-{function}"))
        status_code, body = response["statusCode"], response["body"]
        headers = {k.lower(): v for k, v in response["headers"].items()}
    assert status_code == status, body
    assert headers["x-request-id"]
    if status >= 400:
        error = json.loads(body)["error"]
        assert error["request_id"] == headers["x-request-id"]
        assert error["code"]
    if '"stream": true' in (event["body"] or ""):
        assert headers["content-type"].startswith("text/event-stream")
        assert body.endswith("data: [DONE]\n\n")


def test_docs_behind_a_stage_load_the_spec_from_the_stage(runtime: Runtime) -> None:
    prepare_environment()
    handler = load_handler("models", str(EVENTS.parent / "functions"))
    event = json.loads((EVENTS / "models/docs.json").read_text())
    response = handler(event, LocalContext(function_name="gantry-models"))
    assert "/prod/openapi.json" in response["body"]
