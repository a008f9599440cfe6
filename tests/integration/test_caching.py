"""The exact response cache: MISS then HIT with identical content, never across
organizations, Cache-Control, billing at the cached price, usage shown apart, and a cache
that fails never failing a request."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.domain.caching import SemanticSlot, StoredEntry
from gantry.runtime import Runtime
from tests.conftest import FakeClock, assert_error
from tests.integration.test_limits import Caller, new_key, new_org
from tests.integration.test_limits_settlement import scan

CHAT = "/v1/chat/completions"
SEEDED = {
    "model": "gantry-small",
    "messages": [{"role": "user", "content": "Tell me about rain in the city."}],
    "max_tokens": 12,
    "seed": 3,
}


@pytest.fixture
def caller(runtime: Runtime) -> Caller:
    return new_key(runtime, new_org(runtime), scopes=("completions:write", "usage:read"))


def post(
    client: TestClient, caller: Caller, path: str, body: dict[str, Any], **headers: str
) -> Any:
    response = client.post(path, json=body, headers={**caller.headers, **headers})
    assert response.status_code == 200, response.text
    return response


def content(body: dict[str, Any]) -> dict[str, Any]:
    """The response without what differs per request (id, created)."""
    return {k: v for k, v in body.items() if k not in ("id", "created")}


def ledger(runtime: Runtime, caller: Caller) -> list[dict[str, Any]]:
    return scan(runtime, "REQ#", caller.record.key_id)


def test_same_chat_request_twice_is_miss_then_hit(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    first = post(app_client, caller, CHAT, SEEDED)
    second = post(app_client, caller, CHAT, SEEDED)
    assert first.headers["x-cache-status"] == "MISS"
    assert second.headers["x-cache-status"] == "HIT"
    one, two = first.json(), second.json()
    assert two["choices"] == one["choices"]
    cached = {"cached_tokens": one["usage"]["prompt_tokens"]}
    assert two["usage"] == {**one["usage"], "prompt_tokens_details": cached}
    assert "prompt_tokens_details" not in one["usage"]
    assert second.headers["x-cost-usd"] == "0"  # cached price: zero by default
    assert float(first.headers["x-cost-usd"]) > 0
    hit = [item for item in ledger(runtime, caller) if "cached_tokens" in item]
    assert len(ledger(runtime, caller)) == 2 and len(hit) == 1
    assert hit[0]["cost_nano"] == {"N": "0"}
    assert hit[0]["completion_tokens"] == {"N": str(one["usage"]["completion_tokens"])}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"model": "gantry-embed-small", "input": ["a cat", "a kitten"]}),
        (
            "/v1/embeddings",
            {"model": "gantry-embed-small", "input": "a cat", "encoding_format": "base64"},
        ),
        (
            "/v1/classifications",
            {"model": "gantry-classify", "input": "I love it", "labels": ["good", "bad"]},
        ),
        (
            "/v1/completions",
            {"model": "gantry-small", "prompt": "The cloud", "temperature": 0, "max_tokens": 5},
        ),
    ],
)
def test_deterministic_routes_are_cached(
    app_client: TestClient, caller: Caller, path: str, body: dict[str, Any]
) -> None:
    first = post(app_client, caller, path, body)
    second = post(app_client, caller, path, body)
    assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == ("MISS", "HIT")
    one, two = content(first.json()), content(second.json())
    assert two.pop("usage")["prompt_tokens_details"]["cached_tokens"] > 0
    one.pop("usage")
    assert two == one


def test_parameter_order_and_defaults_do_not_change_the_key(
    app_client: TestClient, caller: Caller
) -> None:
    post(app_client, caller, CHAT, SEEDED)
    explicit = {
        "seed": 3,
        "top_p": 1,
        "n": 1,
        "presence_penalty": 0,
        "max_tokens": 12,
        "messages": SEEDED["messages"],
        "model": "gantry-small",
    }
    assert post(app_client, caller, CHAT, explicit).headers["x-cache-status"] == "HIT"
    other = {**SEEDED, "seed": 4}
    assert post(app_client, caller, CHAT, other).headers["x-cache-status"] == "MISS"


def test_sampled_requests_bypass_and_moderations_carry_no_status(
    app_client: TestClient, caller: Caller
) -> None:
    sampled = {k: v for k, v in SEEDED.items() if k != "seed"}
    assert post(app_client, caller, CHAT, sampled).headers["x-cache-status"] == "BYPASS"
    greedy = {**sampled, "temperature": 0}
    assert post(app_client, caller, CHAT, greedy).headers["x-cache-status"] == "MISS"
    moderation = post(app_client, caller, "/v1/moderations", {"input": "hello"})
    assert "x-cache-status" not in moderation.headers


def test_streams_bypass_the_cache(app_client: TestClient, caller: Caller) -> None:
    post(app_client, caller, CHAT, SEEDED)
    streamed = post(app_client, caller, CHAT, {**SEEDED, "stream": True})
    assert streamed.headers["x-cache-status"] == "BYPASS"
    assert streamed.text.endswith("data: [DONE]\n\n")


def test_another_organization_never_hits(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    post(app_client, caller, CHAT, SEEDED)
    stranger = new_key(runtime, new_org(runtime), scopes=("completions:write",))
    assert post(app_client, stranger, CHAT, SEEDED).headers["x-cache-status"] == "MISS"
    same_org = new_key(runtime, caller.record.org_id, scopes=("completions:write",))
    assert post(app_client, same_org, CHAT, SEEDED).headers["x-cache-status"] == "HIT"


def test_no_cache_skips_the_lookup_but_refreshes_the_entry(
    app_client: TestClient, caller: Caller, clock: FakeClock
) -> None:
    post(app_client, caller, CHAT, SEEDED)
    clock.advance(600)
    bypass = post(app_client, caller, CHAT, SEEDED, **{"Cache-Control": "no-cache"})
    assert bypass.headers["x-cache-status"] == "BYPASS"
    assert "prompt_tokens_details" not in bypass.json()["usage"]
    fresh = post(app_client, caller, CHAT, SEEDED, **{"Cache-Control": "max-age=60"})
    assert fresh.headers["x-cache-status"] == "HIT"  # the no-cache answer was written


def test_no_store_neither_reads_nor_writes(app_client: TestClient, caller: Caller) -> None:
    first = post(app_client, caller, CHAT, SEEDED, **{"Cache-Control": "no-store"})
    assert first.headers["x-cache-status"] == "BYPASS"
    assert post(app_client, caller, CHAT, SEEDED).headers["x-cache-status"] == "MISS"
    again = post(app_client, caller, CHAT, SEEDED, **{"Cache-Control": "no-store"})
    assert again.headers["x-cache-status"] == "BYPASS"


def test_max_age_bounds_the_age_of_a_hit(
    app_client: TestClient, caller: Caller, clock: FakeClock
) -> None:
    post(app_client, caller, CHAT, SEEDED)
    clock.advance(120)
    young = post(app_client, caller, CHAT, SEEDED, **{"Cache-Control": "max-age=300"})
    assert young.headers["x-cache-status"] == "HIT"
    old = post(app_client, caller, CHAT, SEEDED, **{"Cache-Control": "max-age=60"})
    assert old.headers["x-cache-status"] == "MISS"  # and it replaced the entry
    assert (
        post(app_client, caller, CHAT, SEEDED, **{"Cache-Control": "max-age=60"}).headers[
            "x-cache-status"
        ]
        == "HIT"
    )


def test_entries_expire_with_their_ttl(
    app_client: TestClient, caller: Caller, clock: FakeClock, runtime: Runtime
) -> None:
    post(app_client, caller, CHAT, SEEDED)
    clock.advance(runtime.settings.cache_ttl_seconds + 1)
    assert post(app_client, caller, CHAT, SEEDED).headers["x-cache-status"] == "MISS"


@pytest.mark.parametrize("value", ["max-age=soon", "max-age=-1", "max-age"])
def test_a_malformed_cache_control_is_a_400(
    app_client: TestClient, caller: Caller, value: str
) -> None:
    response = app_client.post(
        CHAT, json=SEEDED, headers={**caller.headers, "Cache-Control": value}
    )
    assert_error(response, 400, "invalid_value", "Cache-Control")


def test_cached_price_from_the_registry_and_usage_shows_hits_apart(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    spec = runtime.registry.get("gantry-small")
    runtime.registry.register(
        replace(spec, cached_input_price_per_million=0.05, cached_output_price_per_million=0.2)
    )
    first = post(app_client, caller, CHAT, SEEDED)
    second = post(app_client, caller, CHAT, SEEDED)
    usage = first.json()["usage"]
    half = (usage["prompt_tokens"] * 0.05 + usage["completion_tokens"] * 0.2) / 1e6
    assert float(second.headers["x-cost-usd"]) == pytest.approx(half)
    assert float(first.headers["x-cost-usd"]) == pytest.approx(2 * half)
    report = app_client.get("/v1/usage", headers=caller.headers).json()
    assert report["totals"]["requests"] == 2
    assert report["totals"]["cached_requests"] == 1
    assert report["totals"]["cached_tokens"] == usage["prompt_tokens"]
    assert report["totals"]["cost_usd"] == pytest.approx(3 * half)


class BrokenStore:
    def get(self, key: str, now: float) -> StoredEntry | None:
        raise ConnectionError("cache table unreachable")

    def put(self, key: str, entry: StoredEntry, ttl_seconds: int) -> bool:
        raise ConnectionError("cache table unreachable")

    def slots(self, key: str, now: float) -> list[SemanticSlot]:
        raise ConnectionError("cache table unreachable")

    def put_slot(self, key: str, slot: int, entry: SemanticSlot, ttl_seconds: int) -> None:
        raise ConnectionError("cache table unreachable")


def test_a_failing_cache_never_fails_the_request(
    app_client: TestClient, caller: Caller, runtime: Runtime
) -> None:
    runtime.__dict__["cache"] = BrokenStore()
    first = post(app_client, caller, CHAT, SEEDED)
    second = post(app_client, caller, CHAT, SEEDED, **{"X-Semantic-Cache": "threshold=0.9"})
    assert first.headers["x-cache-status"] == second.headers["x-cache-status"] == "MISS"
    assert second.json()["choices"] == first.json()["choices"]
    assert len(ledger(runtime, caller)) == 2  # both billed at the full price, once each
