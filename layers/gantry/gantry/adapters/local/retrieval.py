"""Finds the training documents that share the most informative words with a query."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gantry.adapters.local.words import content_words


class PassageIndex:
    def __init__(self, documents: Sequence[str]) -> None:
        self.documents = tuple(documents)
        self._terms = [frozenset(content_words(doc)) for doc in self.documents]
        frequency: dict[str, int] = {}
        for terms in self._terms:
            for term in terms:
                frequency[term] = frequency.get(term, 0) + 1
        total = len(self.documents)
        self._idf = {t: math.log(1 + (total - n + 0.5) / (n + 0.5)) for t, n in frequency.items()}

    def search(self, query: str, limit: int) -> list[tuple[float, str]]:
        """Up to `limit` (score, document) pairs, best first; only documents that match.

        The score is the summed inverse document frequency of the query words a document
        contains, divided by the fourth root of its vocabulary size so that short, focused
        documents win ties over long ones.
        """
        terms = {t for t in content_words(query) if t in self._idf}
        if not terms:
            return []
        scored = []
        for index, doc_terms in enumerate(self._terms):
            shared = terms & doc_terms
            if shared:
                score = sum(self._idf[t] for t in shared) / len(doc_terms) ** 0.25
                scored.append((score, index))
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        return [(score, self.documents[index]) for score, index in scored[:limit]]
