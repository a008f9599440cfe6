"""The "hashed-embeddings" model: 256-dimensional unit vectors built without any training run.

A text's vector is the IDF-weighted sum of one vector per word, normalised to length 1. A
word's vector adds three unit-length parts:

* meaning (`MEANING`): random indexing over the corpus. Every word stem has a fixed sparse
  random "index vector"; a word's meaning vector is the sum of the index vectors of the
  stems it co-occurs with (within `WINDOW` content words in a corpus document), each weighted
  by their positive pointwise mutual information. Words used in similar company point in
  similar directions ("rain", "storm", "weather").
* identity (`IDENTITY`): the stem's own index vector, so that shared words always count;
* spelling (`SPELLING`): character trigrams of the word, hashed into the dimensions, so that
  unseen words and variants ("serverless", "servers") still land near each other.

Every hash is `zlib.crc32` or `hashlib.blake2b`, so vectors are the same on every machine
and in every process. Vectors of corpus words are computed on first use and cached.

`embed(text, dimensions)` keeps the first `dimensions` components and normalises again, like
OpenAI's text-embedding-3 models.
"""

from __future__ import annotations

import hashlib
import math
import threading
import zlib
from collections.abc import Sequence

from gantry.adapters.local import corpus
from gantry.adapters.local.words import STOPWORDS, stem, words

DIMENSIONS = 256
WINDOW = 15
MEANING = 1.2
IDENTITY = 0.7
SPELLING = 0.3

Vector = list[float]


class EmbeddingModel:
    def __init__(self, documents: Sequence[str]) -> None:
        self._documents = len(documents)
        frequency: dict[str, int] = {}
        pairs: dict[str, dict[str, float]] = {}
        for doc in documents:
            stems = [stem(w) for w in words(doc)]
            for s in set(stems):
                frequency[s] = frequency.get(s, 0) + 1
            content = [s for s, w in zip(stems, words(doc), strict=True) if _is_content(w)]
            for i, a in enumerate(content):
                row = pairs.setdefault(a, {})
                for b in content[max(0, i - WINDOW) : i]:
                    if a != b:
                        row[b] = row.get(b, 0.0) + 1.0
                        other = pairs.setdefault(b, {})
                        other[a] = other.get(a, 0.0) + 1.0
        self._frequency = frequency
        self._pairs = pairs
        self._totals = {a: sum(row.values()) for a, row in pairs.items()}
        self._grand_total = sum(self._totals.values()) or 1.0
        self._cache: dict[str, Vector] = {}

    def idf(self, word_stem: str) -> float:
        n = self._frequency.get(word_stem, 0)
        return math.log((1 + self._documents) / (1 + n)) + 0.1

    def embed(self, text: str, dimensions: int | None = None) -> tuple[float, ...]:
        total = [0.0] * DIMENSIONS
        for word in words(text):
            s = stem(word)
            _add(total, self.word_vector(word), self.idf(s))
        if not any(total):
            _add(total, _spelling(text.strip()), 1.0)
        return _truncated(total, dimensions or DIMENSIONS)

    def word_vector(self, word: str) -> Vector:
        found = self._cache.get(word)
        if found is None:
            s = stem(word)
            found = [0.0] * DIMENSIONS
            _add(found, _unit(self._meaning(s)), MEANING)
            _add(found, _unit(_index(s)), IDENTITY)
            _add(found, _spelling(word), SPELLING)
            if s in self._pairs:  # only corpus words, so the cache stays bounded
                self._cache[word] = found
        return found

    def _meaning(self, word_stem: str) -> Vector:
        vector = [0.0] * DIMENSIONS
        row = self._pairs.get(word_stem)
        if not row:
            return vector
        row_total = self._totals[word_stem]
        for other, n in row.items():
            pmi = math.log(n * self._grand_total / (row_total * self._totals[other]))
            if pmi > 0:
                _add(vector, _index(other), pmi)
        return vector


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; for unit vectors, the dot product."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


def _is_content(word: str) -> bool:
    return len(word) > 2 and word not in STOPWORDS and not word.isdecimal()


def _index(word_stem: str) -> Vector:
    """A sparse random +-1 vector with (up to) eight non-zero components."""
    digest = hashlib.blake2b(word_stem.encode(), digest_size=16, person=b"gantry-ri").digest()
    vector = [0.0] * DIMENSIONS
    for position in range(0, 16, 2):
        vector[digest[position]] += 1.0 if digest[position + 1] & 1 else -1.0
    return vector


def _spelling(word: str) -> Vector:
    vector = [0.0] * DIMENSIONS
    padded = f"<{word}>"
    for i in range(max(1, len(padded) - 2)):
        h = zlib.crc32(padded[i : i + 3].encode())
        vector[h % DIMENSIONS] += 1.0 if (h >> 8) & 1 else -1.0
    return _unit(vector)


def _unit(vector: Vector) -> Vector:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def _add(target: Vector, vector: Sequence[float], weight: float) -> None:
    for i, x in enumerate(vector):
        if x:
            target[i] += weight * x


def _truncated(vector: Sequence[float], dimensions: int) -> tuple[float, ...]:
    """The first `dimensions` components at unit length (the first axis if they are all 0)."""
    head = _unit(list(vector[:dimensions]))
    if not any(head):
        head[0] = 1.0
    return tuple(head)


_lock = threading.Lock()
_model: EmbeddingModel | None = None


def base_model() -> EmbeddingModel:
    """The embedding model built from the bundled corpus, once per process."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = EmbeddingModel(corpus.documents())
    return _model
