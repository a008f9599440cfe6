"""Helpers for the conversation tests: callers, a recording provider and HTTP shortcuts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from gantry.domain.registry import ModelSpec
from gantry.ports import GenerationResult, Message, ModelProvider, SamplingParams, StreamEvent
from gantry.runtime import Runtime
from tests.integration.test_limits import Caller, new_key, new_org

CONVERSATIONS = "/v1/conversations"


class Http(Protocol):
    def post(self, url: str, **kwargs: Any) -> Any: ...

    def get(self, url: str, **kwargs: Any) -> Any: ...


def caller(runtime: Runtime, scopes: tuple[str, ...] = ("admin:full",)) -> Caller:
    """A key in an organization of its own (enterprise limits: no test is rate limited)."""
    return new_key(runtime, new_org(runtime), scopes=scopes)


def create(http: Http, who: Caller, **body: Any) -> dict[str, Any]:
    response = http.post(CONVERSATIONS, json={"model": "gantry-small", **body}, headers=who.headers)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def say(http: Http, who: Caller, conversation_id: str, content: str, **body: Any) -> Any:
    return http.post(
        f"{CONVERSATIONS}/{conversation_id}/messages",
        json={"content": content, **body},
        headers=who.headers,
    )


def turn(http: Http, who: Caller, conversation_id: str, content: str, **body: Any) -> Any:
    response = say(http, who, conversation_id, content, **body)
    assert response.status_code == 200, response.text
    return response.json()


def all_messages(http: Http, who: Caller, conversation_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"order": "asc", "limit": 100}
    while True:
        response = http.get(
            f"{CONVERSATIONS}/{conversation_id}/messages", params=params, headers=who.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["data"]
        if not page["has_more"]:
            return found
        params["after"] = page["last_id"]


@dataclass
class RecordingProvider:
    """Delegates to another provider and records the messages of every chat call."""

    inner: ModelProvider
    calls: list[list[Message]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def chat(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> GenerationResult:
        self.calls.append(list(messages))
        return self.inner.chat(model, messages, params)

    def chat_stream(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> Iterator[StreamEvent]:
        self.calls.append(list(messages))
        return self.inner.chat_stream(model, messages, params)


def small_window_model(
    runtime: Runtime, model_id: str, base: str = "gantry-small", context_window: int = 300
) -> RecordingProvider:
    """Register `model_id`: `base` with a small context window, served through a recorder."""
    spec = runtime.registry.get(base)
    runtime.registry.register(
        replace(spec, id=model_id, provider="recording", context_window=context_window)
    )
    recorder = RecordingProvider(runtime.providers["local"])
    runtime.providers["recording"] = recorder  # type: ignore[assignment]
    return recorder
