"""The caching policy: Cache-Control and X-Semantic-Cache parsing, what is cacheable, keys
that ignore parameter order and defaults, and cached outcomes that round-trip exactly."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from gantry.adapters.local.provider import LocalProvider
from gantry.domain.cache_codec import decode_outcome, encode_outcome
from gantry.domain.caching import (
    CacheDirectives,
    SemanticSlot,
    decide,
    entry_key,
    index_key,
    nearest,
    parse_cache_control,
    parse_semantic,
    slot_of,
)
from gantry.domain.errors import InvalidRequest
from gantry.domain.inference import InferenceService, Outcome, Sampling
from gantry.domain.registry import Registry
from gantry.ports import Message


@pytest.fixture(scope="module")
def service() -> InferenceService:
    raw = json.loads(resources.files("gantry").joinpath("models.json").read_text())
    return InferenceService(Registry.from_dict(raw), {"local": LocalProvider()})


HELLO = [Message("user", "hello there")]


def test_cache_control_directives() -> None:
    assert parse_cache_control(None) == CacheDirectives()
    assert parse_cache_control("no-cache") == CacheDirectives(no_cache=True)
    assert parse_cache_control("No-Store, max-age=30") == CacheDirectives(no_store=True, max_age=30)
    assert parse_cache_control('private, max-age="5"') == CacheDirectives(max_age=5)
    for bad in ("max-age=soon", "max-age=", "max-age=-3"):
        with pytest.raises(InvalidRequest) as refused:
            parse_cache_control(bad)
        assert refused.value.param == "Cache-Control"


def test_semantic_header() -> None:
    assert parse_semantic(None) is None
    assert parse_semantic("threshold=0.95") == 0.95
    assert parse_semantic(" threshold = .9 ") == 0.9
    assert parse_semantic("off") == 0.0
    for bad in ("threshold=2", "threshold=0", "0.9", "threshold=abc"):
        with pytest.raises(InvalidRequest):
            parse_semantic(bad)


def test_what_is_cacheable(service: InferenceService) -> None:
    none = CacheDirectives()
    sampled = service.plan_chat("gantry-small", HELLO, Sampling(max_tokens=5))
    seeded = service.plan_chat("gantry-small", HELLO, Sampling(max_tokens=5, seed=1))
    greedy = service.plan_chat("gantry-small", HELLO, Sampling(max_tokens=5, temperature=0))
    moderation = service.plan_moderation("gantry-moderation", ["hi"])
    embedding = service.plan_embedding("gantry-embed-small", ["hi"], None)
    assert decide(moderation, none, None) is None
    assert decide(sampled, none, None).skipped_status == "BYPASS"  # type: ignore[union-attr]
    for plan in (seeded, greedy, embedding):
        policy = decide(plan, none, None)
        assert policy is not None and policy.lookup and policy.store
    semantic = decide(sampled, none, 0.9)
    assert semantic is not None and semantic.semantic == 0.9 and not semantic.lookup
    assert decide(embedding, none, 0.9).semantic is None  # type: ignore[union-attr]
    no_cache = decide(seeded, CacheDirectives(no_cache=True), None)
    assert no_cache is not None and not no_cache.lookup and no_cache.store
    no_store = decide(seeded, CacheDirectives(no_store=True), 0.9)
    assert no_store is not None and not (no_store.lookup or no_store.semantic or no_store.store)


def test_keys_ignore_defaults_and_separate_everything_else(service: InferenceService) -> None:
    def key(org: str = "org-a", **sampling: object) -> str:
        plan = service.plan_chat("gantry-small", HELLO, Sampling(**sampling))  # type: ignore[arg-type]
        assert plan.call is not None
        return entry_key(org, plan.spec, plan.endpoint, plan.call)

    base = key(seed=1, max_tokens=5)
    assert key(seed=1, max_tokens=5, temperature=1.0, top_p=1.0, n=1) == base
    assert key(seed=1, max_tokens=5, presence_penalty=0.0, stop=()) == base
    assert key(seed=2, max_tokens=5) != base
    assert key(seed=1, max_tokens=6) != base
    assert key("org-b", seed=1, max_tokens=5) != base
    assert base.startswith("org-a#")


def test_semantic_index_groups_by_context_not_by_the_last_message(
    service: InferenceService,
) -> None:
    def index(*messages: Message) -> str:
        plan = service.plan_chat("gantry-small", list(messages), Sampling(max_tokens=5))
        assert plan.call is not None
        return index_key("org-a", plan.spec, plan.endpoint, plan.call)

    system = Message("system", "be brief")
    assert index(system, Message("user", "a")) == index(system, Message("user", "b"))
    assert index(system, Message("user", "a")) != index(Message("user", "a"))
    assert 0 <= slot_of("anything") < 64 and slot_of("x") == slot_of("x")


def test_nearest_respects_age() -> None:
    slots = [
        SemanticSlot((1.0, 0.0), "old", created_at=0.0),
        SemanticSlot((0.9, 0.1), "new", created_at=100.0),
    ]
    found = nearest((1.0, 0.0), slots, now=110.0, max_age=None)
    assert found is not None and found[0].entry == "old" and found[1] == pytest.approx(1.0)
    found = nearest((1.0, 0.0), slots, now=110.0, max_age=20)
    assert found is not None and found[0].entry == "new"
    assert nearest((1.0, 0.0), slots, now=500.0, max_age=20) is None


@pytest.mark.parametrize("kind", ["chat", "completion", "embedding", "classification"])
def test_outcomes_round_trip_exactly(service: InferenceService, kind: str) -> None:
    if kind == "chat":
        sampling = Sampling(max_tokens=6, seed=3, n=2, logprobs=True, top_logprobs=2)
        outcome: Outcome = service.plan_chat("gantry-small", HELLO, sampling).run()
    elif kind == "completion":
        outcome = service.plan_completion(
            "gantry-small", ["The cloud", "A recipe"], Sampling(max_tokens=4, seed=1)
        ).run()
    elif kind == "embedding":
        outcome = service.plan_embedding("gantry-embed-small", ["a cat", "a dog"], 64).run()
    else:
        outcome = service.plan_classification(
            "gantry-classify", ["I love it"], ["good", "bad"]
        ).run()
    decoded = decode_outcome(encode_outcome(outcome), outcome.spec)
    assert decoded is not None
    assert decoded.cached_tokens == outcome.prompt_tokens
    assert type(decoded) is type(outcome)
    fields = {k: v for k, v in vars(decoded).items() if k != "cached_tokens"}
    assert fields == {k: v for k, v in vars(outcome).items() if k != "cached_tokens"}
    assert decoded.cost_usd == outcome.spec.cached_cost_usd(
        outcome.prompt_tokens, outcome.completion_tokens
    )


def test_unreadable_entries_are_misses(service: InferenceService) -> None:
    spec = service.registry.get("gantry-small")
    assert decode_outcome(b"not zlib", spec) is None
