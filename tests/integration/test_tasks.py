"""Embeddings, classifications, moderations and the model catalogue."""

from __future__ import annotations

import base64
import math
import struct

from fastapi.testclient import TestClient

from gantry.runtime import Runtime


def embed(api: TestClient, **body: object) -> dict[str, object]:
    response = api.post("/v1/embeddings", json={"model": "gantry-embed-small", **body})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_are_unit_vectors_with_exact_usage(api: TestClient, runtime: Runtime) -> None:
    texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Interest rates rose."]
    body = embed(api, input=texts)
    data = body["data"]
    assert isinstance(data, list)
    vectors = [d["embedding"] for d in data]
    assert [d["index"] for d in data] == [0, 1, 2]
    assert all(len(v) == 256 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-6 for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    spec = runtime.registry.get("gantry-embed-small")
    provider = runtime.inference.provider(spec)
    expected = sum(provider.count_tokens(spec, t) for t in texts)
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}


def test_embedding_dimensions_and_base64(api: TestClient) -> None:
    floats = embed(api, input="hello world", dimensions=64)["data"][0]["embedding"]  # type: ignore[index]
    assert len(floats) == 64
    assert abs(math.sqrt(sum(x * x for x in floats)) - 1) < 1e-6
    encoded = embed(api, input="hello world", dimensions=64, encoding_format="base64")
    raw = base64.b64decode(encoded["data"][0]["embedding"])  # type: ignore[index]
    decoded = struct.unpack("<64f", raw)
    assert all(abs(a - b) < 1e-6 for a, b in zip(decoded, floats, strict=True))


def test_classification_scores_sum_to_one(api: TestClient) -> None:
    response = api.post(
        "/v1/classifications",
        json={
            "input": ["I love this movie, it was wonderful", "the stock market fell sharply"],
            "labels": ["positive", "negative"],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "gantry-classify"
    for result in body["results"]:
        assert abs(sum(s["score"] for s in result["scores"]) - 1) < 1e-6
        assert result["label"] == result["scores"][0]["label"]
    assert body["results"][0]["label"] == "positive"
    assert body["usage"]["prompt_tokens"] > 0


def test_moderation_flags_threats(api: TestClient) -> None:
    response = api.post(
        "/v1/moderations", json={"input": ["I will kill you", "How do I bake bread?"]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("modr-")
    threat, bread = body["results"]
    assert threat["flagged"] is True
    assert threat["categories"]["violence"] is True
    assert bread["flagged"] is False
    assert set(threat["categories"]) == set(threat["category_scores"])
    assert "self-harm/intent" in threat["categories"]


def test_models_list_and_retrieve(api: TestClient, runtime: Runtime) -> None:
    body = api.get("/v1/models").json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == sorted(m.id for m in runtime.registry.all())
    small = api.get("/v1/models/gantry-small")
    assert small.status_code == 200
    model = small.json()
    assert model["context_window"] == 4096
    assert model["pricing"]["currency"] == "USD"
    assert "chat" in model["capabilities"]
    assert small.headers["x-model-version"] == model["version"]
    old = api.get("/v1/models/gantry-small-2025-06")
    assert old.json()["deprecation_date"] == "2026-09-01"
    assert old.headers["deprecation"].startswith("@")
    missing = api.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
