"""InvokeModel bodies for Bedrock's embedding models, batched to each model's per-call limit.

* Titan Text Embeddings v2 (`amazon.titan-embed-text-v2:0`): one text per call (calls run
  in parallel); `dimensions` 256, 512 or 1024 (a smaller request is served from the next
  size up, truncated and normalised again); tokens from `inputTextTokenCount`.
* Titan Text Embeddings v1 (`amazon.titan-embed-text-v1`): one text per call, 1536 numbers.
* Cohere Embed v3 (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`): up to 96
  texts per call, `input_type` from `provider_options.input_type` (default
  `search_document`); tokens from the `X-Amzn-Bedrock-Input-Token-Count` header.

`provider_options.embedding_format` (`titan-v2`, `titan`, `cohere`) overrides the guess
from the model id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gantry.adapters.bedrock_converse import invalid_response
from gantry.domain.registry import ModelSpec

TITAN_V2_SIZES = (256, 512, 1024)
COHERE_BATCH = 96
TOKEN_HEADER = "x-amzn-bedrock-input-token-count"


@dataclass(frozen=True)
class EmbeddingCall:
    """One InvokeModel call: the texts it embeds and its request body."""

    texts: tuple[str, ...]
    body: bytes


def embedding_format(spec: ModelSpec) -> str:
    chosen = spec.provider_options.get("embedding_format")
    if chosen:
        return str(chosen)
    model = spec.provider_model_id
    if model.startswith("cohere.embed"):
        return "cohere"
    if model.startswith("amazon.titan-embed-text-v2") or model.startswith("amazon.titan-embed-g1"):
        return "titan-v2"
    return "titan"


def titan_size(dimensions: int | None) -> int:
    if dimensions is None:
        return TITAN_V2_SIZES[-1]
    return next((size for size in TITAN_V2_SIZES if size >= dimensions), TITAN_V2_SIZES[-1])


def embedding_calls(
    spec: ModelSpec, inputs: Sequence[str], dimensions: int | None
) -> list[EmbeddingCall]:
    kind = embedding_format(spec)
    if kind == "cohere":
        input_type = str(spec.provider_options.get("input_type", "search_document"))
        return [
            EmbeddingCall(
                tuple(batch),
                json.dumps(
                    {"texts": list(batch), "input_type": input_type, "truncate": "NONE"}
                ).encode(),
            )
            for batch in (inputs[i : i + COHERE_BATCH] for i in range(0, len(inputs), COHERE_BATCH))
        ]
    if kind == "titan-v2":
        size = titan_size(dimensions)
        return [
            EmbeddingCall(
                (text,),
                json.dumps({"inputText": text, "dimensions": size, "normalize": True}).encode(),
            )
            for text in inputs
        ]
    return [EmbeddingCall((text,), json.dumps({"inputText": text}).encode()) for text in inputs]


def parse_embedding_response(
    spec: ModelSpec, call: EmbeddingCall, payload: bytes, headers: Mapping[str, str]
) -> tuple[list[list[float]], int | None]:
    """The call's vectors in input order, and its input tokens if Bedrock reported them."""
    try:
        body: Any = json.loads(payload)
    except ValueError:
        raise invalid_response(spec, "the embedding body is not JSON") from None
    if not isinstance(body, Mapping):
        raise invalid_response(spec, "the embedding body is not an object")
    if "embedding" in body:
        vectors: Any = [body["embedding"]]
        tokens = body.get("inputTextTokenCount")
    else:
        vectors = body.get("embeddings")
        if isinstance(vectors, Mapping):  # embeddings_by_type
            vectors = vectors.get("float")
        tokens = None
    if not isinstance(vectors, list) or len(vectors) != len(call.texts):
        raise invalid_response(spec, "the embeddings do not match the inputs")
    for vector in vectors:
        if not isinstance(vector, list) or not vector:
            raise invalid_response(spec, "an embedding is not a list of numbers")
        if not all(isinstance(x, int | float) for x in vector):
            raise invalid_response(spec, "an embedding is not a list of numbers")
    header = headers.get(TOKEN_HEADER)
    if tokens is None and header is not None and header.isdigit():
        tokens = int(header)
    return [[float(x) for x in v] for v in vectors], tokens if isinstance(tokens, int) else None
