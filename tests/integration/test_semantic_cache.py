"""The semantic cache: opt-in per request or per key; a similar prompt at or above the
threshold is a HIT with its similarity, below it a MISS; never across organizations."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.domain.caching import SEMANTIC_SLOTS, index_key, semantic_prompt
from gantry.domain.inference import Sampling
from gantry.domain.keys import KeyRecord, hash_secret, new_api_key
from gantry.ports import Message
from gantry.runtime import Runtime
from tests.conftest import assert_error
from tests.integration.test_limits import Caller, new_key, new_org

CHAT = "/v1/chat/completions"
ASKED = "Tell me about the weather in the mountains."
CLOSE = "Tell me about the weather up in the mountains."  # similarity ~0.98
LOOSE = "What is the weather like in the mountains?"  # similarity ~0.79


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    # Sampled (no seed): never an exact-cache candidate, so only the semantic cache applies.
    return {
        "model": "gantry-small",
        "messages": [
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": prompt},
        ],
        "max_tokens": 10,
        **extra,
    }


@pytest.fixture
def caller(runtime: Runtime) -> Caller:
    return new_key(runtime, new_org(runtime), scopes=("completions:write",))


def ask(client: TestClient, caller: Caller, body: dict[str, Any], semantic: str | None) -> Any:
    headers = dict(caller.headers)
    if semantic is not None:
        headers["X-Semantic-Cache"] = semantic
    response = client.post(CHAT, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_similar_prompt_above_the_threshold_is_a_hit(
    app_client: TestClient, caller: Caller
) -> None:
    first = ask(app_client, caller, chat(ASKED), "threshold=0.95")
    assert first.headers["x-cache-status"] == "MISS"
    second = ask(app_client, caller, chat(CLOSE), "threshold=0.95")
    assert second.headers["x-cache-status"] == "HIT"
    similarity = float(second.headers["x-cache-similarity"])
    assert 0.95 <= similarity < 1.0
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


def test_below_the_threshold_is_a_miss(app_client: TestClient, caller: Caller) -> None:
    ask(app_client, caller, chat(ASKED), "threshold=0.95")
    loose = ask(app_client, caller, chat(LOOSE), "threshold=0.95")
    assert loose.headers["x-cache-status"] == "MISS"
    assert "x-cache-similarity" not in loose.headers
    lenient = ask(app_client, caller, chat(LOOSE), "threshold=0.75")
    # LOOSE itself was stored by the previous request: identical prompts match fully.
    assert lenient.headers["x-cache-status"] == "HIT"
    assert float(lenient.headers["x-cache-similarity"]) == pytest.approx(1.0, abs=1e-3)


def test_without_opting_in_sampled_requests_bypass(app_client: TestClient, caller: Caller) -> None:
    ask(app_client, caller, chat(ASKED), "threshold=0.95")
    plain = ask(app_client, caller, chat(ASKED), None)
    assert plain.headers["x-cache-status"] == "BYPASS"
    off = ask(app_client, caller, chat(ASKED), "off")
    assert off.headers["x-cache-status"] == "BYPASS"


def test_different_parameters_or_context_never_match(
    app_client: TestClient, caller: Caller
) -> None:
    ask(app_client, caller, chat(ASKED), "threshold=0.9")
    other_params = ask(app_client, caller, chat(ASKED, max_tokens=11), "threshold=0.9")
    assert other_params.headers["x-cache-status"] == "MISS"
    body = chat(ASKED)
    body["messages"][0]["content"] = "You are verbose."
    assert ask(app_client, caller, body, "threshold=0.9").headers["x-cache-status"] == "MISS"


def test_semantic_entries_are_per_organization(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    ask(app_client, caller, chat(ASKED), "threshold=0.9")
    stranger = new_key(runtime, new_org(runtime), scopes=("completions:write",))
    assert (
        ask(app_client, stranger, chat(ASKED), "threshold=0.9").headers["x-cache-status"] == "MISS"
    )


def test_opt_in_per_key(app_client: TestClient, runtime: Runtime) -> None:
    org = new_org(runtime)
    full, key_id, secret = new_api_key()
    runtime.key_store.put_key(
        KeyRecord(
            key_id=key_id,
            org_id=org,
            secret_hmac=hash_secret(runtime.pepper(), secret),
            scopes=frozenset({"completions:write"}),
            created_at=time.time(),
            metadata={"semantic_cache": "threshold=0.95"},
        )
    )
    caller = Caller(full, runtime.key_store.get_key(key_id))  # type: ignore[arg-type]
    assert ask(app_client, caller, chat(ASKED), None).headers["x-cache-status"] == "MISS"
    assert ask(app_client, caller, chat(CLOSE), None).headers["x-cache-status"] == "HIT"
    assert ask(app_client, caller, chat(CLOSE), "off").headers["x-cache-status"] == "BYPASS"


def test_an_admin_opts_a_key_in_through_the_keys_api(
    app_client: TestClient, runtime: Runtime
) -> None:
    org = new_org(runtime)
    admin = new_key(runtime, org, scopes=("admin:full",))
    caller = new_key(runtime, org, scopes=("completions:write",))
    path = f"/v1/keys/{caller.record.key_id}"
    bad = app_client.patch(
        path, json={"metadata": {"semantic_cache": "threshold=2"}}, headers=admin.headers
    )
    assert_error(bad, 400, "invalid_value", "metadata.semantic_cache")
    too_many = {f"k{i}": "v" for i in range(17)}
    assert_error(
        app_client.patch(path, json={"metadata": too_many}, headers=admin.headers),
        400,
        "invalid_value",
        "metadata",
    )

    patched = app_client.patch(
        path, json={"metadata": {"semantic_cache": "threshold=0.95"}}, headers=admin.headers
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"] == {"semantic_cache": "threshold=0.95"}
    assert ask(app_client, caller, chat(ASKED), None).headers["x-cache-status"] == "MISS"
    assert ask(app_client, caller, chat(CLOSE), None).headers["x-cache-status"] == "HIT"

    cleared = app_client.patch(path, json={"metadata": None}, headers=admin.headers)
    assert cleared.json()["metadata"] is None
    assert ask(app_client, caller, chat(CLOSE), None).headers["x-cache-status"] != "HIT"
    stored = runtime.key_store.get_key(caller.record.key_id)
    assert stored is not None and stored.metadata == {}


@pytest.mark.parametrize("value", ["threshold=1.5", "threshold=0", "similarity=0.9", "yes"])
def test_a_malformed_header_is_a_400(app_client: TestClient, caller: Caller, value: str) -> None:
    response = app_client.post(
        CHAT, json=chat(ASKED), headers={**caller.headers, "X-Semantic-Cache": value}
    )
    assert_error(response, 400, "invalid_value", "X-Semantic-Cache")


def test_an_index_holds_a_bounded_number_of_prompts(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    for number in range(SEMANTIC_SLOTS + 16):
        prompt = f"{ASKED} Case {number}."
        ask(app_client, caller, chat(prompt), "threshold=0.99")
    plan = runtime.inference.plan_chat(
        "gantry-small",
        [Message("system", "You are brief."), Message("user", ASKED)],
        Sampling(max_tokens=10),
    )
    assert plan.call is not None and semantic_prompt(plan.call) == ASKED
    key = index_key(caller.record.org_id, plan.spec, plan.endpoint, plan.call)
    slots = runtime.cache.slots(key, runtime.clock.now())
    assert 0 < len(slots) <= SEMANTIC_SLOTS
    assert all(len(slot.vector) == 256 for slot in slots)
