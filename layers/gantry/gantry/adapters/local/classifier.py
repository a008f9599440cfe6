"""The "zero-shot" classifier: scores caller-given labels against a text.

Each label gets a prototype vector: the embedding of the label itself, plus the embedding of
its hint words when the label is a common one (`HINTS`, e.g. "positive" -> "good great
love ..."), plus the centroid of any labelled examples the classifier was given. A label's
score for an input is

    cosine(input, prototype) + LEXICAL * overlap

where `overlap` is the IDF-weighted share of the input's content words that appear in the
label, its hints or its examples. Scores go through a softmax with temperature
`TEMPERATURE`, so each input's label probabilities sum to 1.

The classifier learns from labelled data with `with_examples({"label": ["text", ...]})`,
which returns a new classifier whose prototypes include those examples.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gantry.adapters.local import embeddings
from gantry.adapters.local.embeddings import EmbeddingModel
from gantry.adapters.local.words import content_words, stem

LEXICAL = 0.5
TEMPERATURE = 0.1
HINT_WEIGHT = 1.0
EXAMPLE_WEIGHT = 1.0
MAX_CACHED_LABELS = 4096

HINTS: Mapping[str, str] = {
    "positive": "good great excellent wonderful love amazing happy pleased delighted fantastic "
    "brilliant beautiful enjoy recommend best nice perfect kind friendly praise",
    "negative": "bad terrible awful hate horrible poor disappointed broken worst rude dirty "
    "waste boring sad angry slow cold confusing complain",
    "neutral": "fact describe information report ordinary average usual",
    "finance": "money stock market shares bank interest rates investors price profit revenue "
    "economy inflation budget trading bonds currency loan savings",
    "business": "company customers sales revenue profit market shop manager quarterly",
    "sports": "sport football basketball tennis match team goal game players coach "
    "championship race marathon score athletes running",
    "cooking": "cook recipe bake bread flour oven soup pasta kitchen ingredients salt sauce "
    "dinner meal dough roast",
    "food": "food eat meal taste delicious bread soup restaurant dinner breakfast fruit "
    "vegetables cook",
    "technology": "computer software programming code internet app data server cloud "
    "database network device program developer",
    "science": "experiment physics chemistry biology atoms cells energy planet research "
    "scientists molecule gravity",
    "weather": "rain snow storm wind sunny cloudy forecast temperature thunder weather fog "
    "heat cold",
    "travel": "trip flight train hotel airport passport holiday tourist journey visit "
    "travel luggage",
    "health": "doctor hospital medicine illness sleep exercise fever vaccine healthy "
    "disease patients",
    "politics": "election government vote parliament law minister policy party democracy citizens",
    "entertainment": "film movie music concert show actors song television game fun",
    "music": "music song concert singer band album guitar piano melody",
    "education": "school teacher students learn study university lesson class exam",
    "spam": "free winner prize click offer buy cheap limited urgent claim reward",
    "urgent": "urgent immediately emergency asap now critical quickly deadline",
    "complaint": "complaint refund broken disappointed unacceptable late rude problem",
    "question": "question ask what how why when where who which",
    "greeting": "hello hi hey welcome good morning greetings",
    "farewell": "goodbye bye farewell later night leaving",
}


class ZeroShotClassifier:
    def __init__(
        self,
        embedder: EmbeddingModel,
        examples: Mapping[str, Sequence[str]] | None = None,
        memo: dict[str, _Embedded] | None = None,
    ) -> None:
        """`memo`, if given, keeps each example's vector and words for every classifier
        derived from this one (training builds one per epoch from the same examples)."""
        self.embedder = embedder
        self.examples: Mapping[str, tuple[str, ...]] = {
            label: tuple(texts) for label, texts in (examples or {}).items()
        }
        self._memo = memo
        self._prototypes: dict[str, tuple[tuple[float, ...], frozenset[str]]] = {}

    def with_examples(self, examples: Mapping[str, Sequence[str]]) -> ZeroShotClassifier:
        """A classifier that also knows these labelled examples."""
        merged = {label: list(texts) for label, texts in self.examples.items()}
        for label, texts in examples.items():
            merged.setdefault(label, []).extend(texts)
        return ZeroShotClassifier(self.embedder, merged, self._memo)

    def remembering(self) -> ZeroShotClassifier:
        """The same classifier, with a memo of example vectors for those derived from it."""
        return ZeroShotClassifier(self.embedder, self.examples, {})

    def classify(self, text: str, labels: Sequence[str]) -> dict[str, float]:
        """Probability of each label (in the given order), summing to 1."""
        vector = self.embedder.embed(text)
        stems = content_words(text)
        idf = self.embedder.idf
        total = sum(idf(s) for s in stems)
        scores = []
        for label in labels:
            prototype, vocabulary = self._prototype(label)
            overlap = sum(idf(s) for s in stems if s in vocabulary) / total if total else 0.0
            scores.append(embeddings.cosine(vector, prototype) + LEXICAL * overlap)
        return dict(zip(labels, _softmax(scores, TEMPERATURE), strict=True))

    def _prototype(self, label: str) -> tuple[tuple[float, ...], frozenset[str]]:
        found = self._prototypes.get(label)
        if found is None:
            found = self._build_prototype(label)
            if len(self._prototypes) >= MAX_CACHED_LABELS:
                self._prototypes.clear()
            self._prototypes[label] = found
        return found

    def _build_prototype(self, label: str) -> tuple[tuple[float, ...], frozenset[str]]:
        parts = [(self._embedded(label), 1.0)]
        hints = _hints(label)
        if hints:
            parts.append((self._embedded(hints), HINT_WEIGHT))
        examples = self.examples.get(label, ())
        if examples:
            share = EXAMPLE_WEIGHT / len(examples)
            parts.extend((self._embedded(example), share) for example in examples)
        total = [0.0] * len(parts[0][0].vector)
        for embedded, weight in parts:
            for i, x in enumerate(embedded.vector):
                total[i] += weight * x
        norm = math.sqrt(sum(x * x for x in total)) or 1.0
        vocabulary = frozenset(s for embedded, _ in parts for s in embedded.words)
        return tuple(x / norm for x in total), vocabulary

    def _embedded(self, text: str) -> _Embedded:
        found = self._memo.get(text) if self._memo is not None else None
        if found is None:
            found = _Embedded(self.embedder.embed(text), frozenset(content_words(text)))
            if self._memo is not None:
                self._memo[text] = found
        return found


@dataclass(frozen=True)
class _Embedded:
    vector: tuple[float, ...]
    words: frozenset[str]


def _hints(label: str) -> str:
    key = label.strip().lower()
    if key in HINTS:
        return HINTS[key]
    stemmed = stem(key)
    return next((hints for name, hints in HINTS.items() if stem(name) == stemmed), "")


def _softmax(scores: Sequence[float], temperature: float) -> list[float]:
    if not scores:
        return []
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    total = math.fsum(weights)
    return [w / total for w in weights]


_lock = threading.Lock()
_model: ZeroShotClassifier | None = None


def base_model() -> ZeroShotClassifier:
    """The classifier over the bundled embedding model, once per process."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = ZeroShotClassifier(embeddings.base_model())
    return _model
