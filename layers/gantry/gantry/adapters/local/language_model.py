"""The "ngram-small" language model: word trigrams with interpolated Kneser-Ney smoothing.

Tokens are `gantry-words-v1` pieces. Every document is padded as ``EOT EOT tokens... EOT``,
so the model learns how documents start and when they end. The probability of a token given
the two before it is

    P(w | u v) = max(c(u v w) - D, 0) / c(u v .) + b(u v) * P(w | v)
    P(w | v)   = max(N(. v w) - D, 0) / N(. v .) + b(v) * P(w)
    P(w)       = (1 - F) * N(. w) / N(. .) + F / |V|

where N(...) are Kneser-Ney continuation counts (how many distinct tokens precede), D is the
absolute discount, b(...) is the mass the discount frees at that context, and F a small
uniform floor so that every token can be sampled. Unseen contexts back off entirely.

A trigram model only sees the last two tokens, so a prompt's topic is carried by retrieval:
`passage(query)` finds the training documents sharing the most informative words with the
query, and `log_probs(u, v, passage)` mixes their own trigram statistics in,
``(1 - lam) * P(w | u v) + lam * P_passage(w | u v)``, with `lam` = `PASSAGE_TRIGRAM` where
the passage contains the context ``u v``, `PASSAGE_BIGRAM` where it contains only ``v``, and
0 elsewhere. It is a cache language model seeded with related text.

The model is defined by its vocabulary and a table of (possibly weighted) trigram counts, so
it can be fine-tuned: `model.with_extra_texts(texts, weight)` returns a new model whose counts
are the base counts plus `weight` times the counts of `texts` (new pieces get new ids after
the existing ones, so token ids and `logit_bias` keep their meaning). `NGramModel.train(texts)`
builds one from scratch. Training on the bundled corpus takes a few tens of milliseconds, so
the base model is built on first use (`base_model()`) and cached for the process.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from gantry.adapters.local import corpus
from gantry.adapters.local.retrieval import PassageIndex
from gantry.adapters.local.tokenizer import EOT_ID, UNK_ID, Vocabulary

DISCOUNT = 0.6
UNIFORM_FLOOR = 0.01
PASSAGE_TRIGRAM = 0.75
PASSAGE_BIGRAM = 0.3
PASSAGES = 3

Trigram = tuple[int, int, int]
_Table = tuple[float, dict[int, float]]  # (backoff mass, discounted probability per token)


class NGramModel:
    def __init__(
        self,
        vocabulary: Vocabulary,
        counts: Mapping[Trigram, float],
        discount: float = DISCOUNT,
        documents: Sequence[str] = (),
    ) -> None:
        """`documents` are the texts `passage` retrieves from (usually the training texts)."""
        self.vocabulary = vocabulary
        self.counts: Mapping[Trigram, float] = MappingProxyType(dict(counts))
        self.discount = discount
        size = len(vocabulary)
        trigrams: dict[tuple[int, int], dict[int, float]] = {}
        continuations: dict[int, dict[int, float]] = {}
        for (u, v, w), c in self.counts.items():
            trigrams.setdefault((u, v), {})[w] = c
            after_v = continuations.setdefault(v, {})
            after_v[w] = after_v.get(w, 0.0) + 1.0
        preceded = [0.0] * size
        for after_v in continuations.values():
            for w in after_v:
                preceded[w] += 1.0
        self._trigrams = {ctx: _discounted(c, discount) for ctx, c in trigrams.items()}
        self._bigrams = {v: _discounted(c, discount) for v, c in continuations.items()}
        total = sum(preceded) or 1.0
        floor = UNIFORM_FLOOR / (size - 1)
        self._unigram = [(1 - UNIFORM_FLOOR) * n / total + floor for n in preceded]
        self._unigram[UNK_ID] = 0.0
        self._log_unigram = [math.log(p) if p > 0 else -math.inf for p in self._unigram]
        self._index = PassageIndex(documents)

    @classmethod
    def train(cls, texts: Iterable[str], discount: float = DISCOUNT) -> NGramModel:
        texts = list(texts)
        vocabulary = Vocabulary.from_texts(texts)
        return cls(vocabulary, count_trigrams(vocabulary, texts), discount, texts)

    def with_extra_texts(self, texts: Iterable[str], weight: float = 1.0) -> NGramModel:
        """A fine-tuned copy: base counts plus `weight` times the counts of `texts`."""
        texts = list(texts)
        vocabulary = self.vocabulary.extended(texts)
        counts = dict(self.counts)
        for trigram, c in count_trigrams(vocabulary, texts, weight).items():
            counts[trigram] = counts.get(trigram, 0.0) + c
        documents = [*self._index.documents, *texts]
        return NGramModel(vocabulary, counts, self.discount, documents)

    def context(self, text: str) -> tuple[int, int]:
        """The two tokens a continuation of `text` is conditioned on."""
        ids = [EOT_ID, EOT_ID, *self.vocabulary.encode(text)]
        return ids[-2], ids[-1]

    def passage(self, query: str) -> Passage | None:
        """The documents most related to `query`, as a `Passage` for `log_probs`."""
        found = self._index.search(query, PASSAGES)
        if not found:
            return None
        best = found[0][0]
        return Passage(self.vocabulary, [(doc, score / best) for score, doc in found])

    def log_probs(self, u: int, v: int, passage: Passage | None = None) -> list[float]:
        """Natural-log probability of every vocabulary id following the tokens `u v`."""
        scale, sparse = self._mixture(u, v)
        mixed = passage.distribution(u, v) if passage is not None else None
        if mixed is not None:
            weight, local = mixed
            keep = 1.0 - weight
            scale *= keep
            sparse = {w: p * keep for w, p in sparse.items()}
            for w, p in local.items():
                sparse[w] = sparse.get(w, 0.0) + weight * p
        log_scale = math.log(scale) if scale > 0 else -math.inf
        out = [log_scale + lp for lp in self._log_unigram]
        unigram = self._unigram
        for w, p in sparse.items():
            out[w] = math.log(p + scale * unigram[w])
        return out

    def _mixture(self, u: int, v: int) -> tuple[float, dict[int, float]]:
        """P(. | u v) as `sparse[w] + scale * unigram[w]`."""
        sparse: dict[int, float] = {}
        scale = 1.0
        for table in (self._trigrams.get((u, v)), self._bigrams.get(v)):
            if table is None:
                continue
            backoff, direct = table
            for w, p in direct.items():
                sparse[w] = sparse.get(w, 0.0) + scale * p
            scale *= backoff
        return scale, sparse


class Passage:
    """Trigram and bigram statistics of a few weighted documents."""

    def __init__(self, vocabulary: Vocabulary, documents: Sequence[tuple[str, float]]) -> None:
        trigrams: dict[tuple[int, int], dict[int, float]] = {}
        bigrams: dict[int, dict[int, float]] = {}
        for text, weight in documents:
            seq = [EOT_ID, EOT_ID, *vocabulary.encode(text), EOT_ID]
            for u, v, w in zip(seq, seq[1:], seq[2:], strict=False):
                after_uv = trigrams.setdefault((u, v), {})
                after_uv[w] = after_uv.get(w, 0.0) + weight
                after_v = bigrams.setdefault(v, {})
                after_v[w] = after_v.get(w, 0.0) + weight
        self._trigrams = {ctx: _normalised(c) for ctx, c in trigrams.items()}
        self._bigrams = {v: _normalised(c) for v, c in bigrams.items()}

    def distribution(self, u: int, v: int) -> tuple[float, dict[int, float]] | None:
        """(mixing weight, probabilities) for the context `u v`, if the passage has seen it."""
        found = self._trigrams.get((u, v))
        if found is not None:
            return PASSAGE_TRIGRAM, found
        found = self._bigrams.get(v)
        return (PASSAGE_BIGRAM, found) if found is not None else None


def _normalised(counts: Mapping[int, float]) -> dict[int, float]:
    total = sum(counts.values())
    return {w: c / total for w, c in counts.items()}


def count_trigrams(
    vocabulary: Vocabulary, texts: Iterable[str], weight: float = 1.0
) -> dict[Trigram, float]:
    counts: dict[Trigram, float] = {}
    for text in texts:
        seq = [EOT_ID, EOT_ID, *vocabulary.encode(text), EOT_ID]
        for trigram in zip(seq, seq[1:], seq[2:], strict=False):
            counts[trigram] = counts.get(trigram, 0.0) + weight
    return counts


def _discounted(counts: Mapping[int, float], discount: float) -> _Table:
    total = sum(counts.values())
    direct = {w: (c - discount) / total for w, c in counts.items() if c > discount}
    return max(0.0, 1.0 - sum(direct.values())), direct


_lock = threading.Lock()
_base: NGramModel | None = None


def base_model() -> NGramModel:
    """The model trained on the bundled corpus, built once per process."""
    global _base
    if _base is None:
        with _lock:
            if _base is None:
                _base = NGramModel.train(corpus.documents())
    return _base
