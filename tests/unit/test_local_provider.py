from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from importlib import resources

import pytest

from gantry.adapters.local import language_model
from gantry.adapters.local.provider import LocalProvider
from gantry.domain.errors import InvalidRequest
from gantry.domain.registry import ModelSpec, Registry
from gantry.ports import Message, ModelProvider, SamplingParams

REGISTRY = Registry.from_dict(
    json.loads(resources.files("gantry").joinpath("models.json").read_text())
)
MESSAGES = [Message("user", "What is cloud computing?")]
PARAMS = SamplingParams(max_tokens=20, seed=1)


def spec(model_id: str) -> ModelSpec:
    return REGISTRY.get(model_id)


def test_every_local_model_in_the_registry_is_served() -> None:
    provider: ModelProvider = LocalProvider()
    for model in REGISTRY.all():
        if model.provider != "local":
            continue
        if model.supports("chat"):
            assert provider.chat(model, MESSAGES, PARAMS).choices
        if model.supports("completions"):
            assert provider.complete(model, "Hello", PARAMS).choices
        if model.supports("embeddings"):
            assert provider.embed(model, ["Hello"], None).vectors
        if model.supports("classifications"):
            assert provider.classify(model, ["Hello"], ["a", "b"]).scores
        if model.supports("moderations"):
            assert provider.moderate(model, ["Hello"]).results


@pytest.mark.parametrize(
    ("model_id", "call"),
    [
        ("gantry-small", "embed"),
        ("gantry-small", "classify"),
        ("gantry-small", "moderate"),
        ("gantry-echo", "embed"),
        ("gantry-embed-small", "chat"),
        ("gantry-embed-small", "complete"),
        ("gantry-classify", "moderate"),
        ("gantry-moderation", "classify"),
    ],
)
def test_unsupported_tasks_are_rejected_on_the_model_param(model_id: str, call: str) -> None:
    provider = LocalProvider()
    model = spec(model_id)
    calls: dict[str, Callable[[], object]] = {
        "chat": lambda: provider.chat(model, MESSAGES, PARAMS),
        "complete": lambda: provider.complete(model, "x", PARAMS),
        "embed": lambda: provider.embed(model, ["x"], None),
        "classify": lambda: provider.classify(model, ["x"], ["a"]),
        "moderate": lambda: provider.moderate(model, ["x"]),
    }
    with pytest.raises(InvalidRequest) as caught:
        calls[call]()
    assert caught.value.param == "model"


def test_unknown_local_model_is_rejected() -> None:
    ghost = replace(spec("gantry-small"), id="ghost", provider_model_id="no-such-model")
    with pytest.raises(InvalidRequest) as caught:
        LocalProvider().complete(ghost, "x", PARAMS)
    assert caught.value.param == "model"


def test_token_counts_are_shared_by_all_local_models() -> None:
    provider = LocalProvider()
    counts = {provider.count_tokens(m, "Hello, world!") for m in REGISTRY.all()}
    assert counts == {4}


def test_concurrent_calls_match_sequential_ones() -> None:
    requests = [
        (i, [Message("user", f"Tell me about topic {i} and the weather")]) for i in range(8)
    ]
    model = spec("gantry-small")
    expected = [LocalProvider().chat(model, m, replace(PARAMS, seed=i)) for i, m in requests]
    provider = LocalProvider()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda r: provider.chat(model, r[1], replace(PARAMS, seed=r[0])), requests)
        )
    assert results == expected


def test_registered_fine_tuned_model_is_served() -> None:
    provider = LocalProvider()
    tuned = language_model.base_model().with_extra_texts(["Our mascot is a purple heron."], 5.0)
    provider.register_language_model("ngram-small-ft", tuned)
    model = replace(spec("gantry-small"), id="ft:gantry-small", provider_model_id="ngram-small-ft")
    params = SamplingParams(max_tokens=4, temperature=0.0)
    assert provider.complete(model, "Our mascot is a", params).choices[0].text == " purple heron."


COLD_START = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from gantry.adapters.local.provider import LocalProvider
from gantry.domain.registry import Registry
from gantry.ports import Message, SamplingParams

raw = resources.files("gantry").joinpath("models.json").read_text()
registry = Registry.from_dict(json.loads(raw))
provider = LocalProvider()
small, embed = registry.get("gantry-small"), registry.get("gantry-embed-small")
params = SamplingParams(max_tokens=20, seed=3)
messages = [Message("user", "What is the weather like?")]
start = time.process_time()  # CPU time: a busy machine does not inflate it
with ThreadPoolExecutor(max_workers=8) as pool:
    chats = list(pool.map(lambda _: provider.chat(small, messages, params), range(8)))
    vectors = list(pool.map(lambda _: provider.embed(embed, ["rain"], None), range(8)))
elapsed = time.process_time() - start
print(json.dumps({
    "elapsed": elapsed,
    "chats_equal": all(c == chats[0] for c in chats),
    "vectors_equal": all(v == vectors[0] for v in vectors),
}))
"""


def test_cold_start_is_fast_and_thread_safe() -> None:
    done = subprocess.run(
        [sys.executable, "-c", COLD_START], capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout)
    assert report["chats_equal"]
    assert report["vectors_equal"]
    assert report["elapsed"] < 1.0
