"""Decoding for the n-gram model: sampling controls, stop sequences, logprobs and usage.

The model's next-token log-probabilities are conditioned on the last two tokens of the text
so far and mixed with the training passages most related to `topic` (see `language_model`).
They are then adjusted, in order, by

1. penalties over the tokens this choice has generated so far, as OpenAI defines them:
   ``logit - count * frequency_penalty - (count > 0) * presence_penalty``;
2. `logit_bias` (vocabulary id -> bias; -100 effectively bans, +100 effectively forces);
3. masks: the unknown token and bare whitespace are never produced, and a token is not
   produced right after one it would merge with when the text is tokenized again (a word
   piece without a leading space after a letter, a digit after a digit). This keeps the
   billed `completion_tokens` equal to the number of tokens generated.

Temperature 0 is greedy (argmax, ties to the lowest id); otherwise logits are divided by the
temperature, nucleus (`top_p`) filtering keeps the smallest set of most likely tokens whose
mass reaches `top_p`, and one token is drawn. Reported logprobs are the log-softmax of the
adjusted logits at the request's temperature (at temperature 0, at temperature 1), before
nucleus filtering, floored at -9999.

Sampling the end-of-text token ends the choice with finish_reason "stop". So does a stop
sequence: the text ends just before it. Reaching `max_tokens` ends it with "length".
`completion_tokens` is the token count of the returned text (after stop-sequence trimming);
logprobs cover the tokens that contribute to the returned text. Choice `i` of a seeded
request uses its own random stream derived from (seed, i); without a seed every choice
draws fresh randomness.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from gantry.adapters.local import tokenizer
from gantry.adapters.local.language_model import NGramModel, Passage
from gantry.adapters.local.tokenizer import EOT_ID, UNK_ID
from gantry.ports import (
    ChoiceDone,
    Generation,
    SamplingParams,
    StreamEvent,
    TextDelta,
    TokenLogprob,
    TopLogprob,
)

LOGPROB_FLOOR = -9999.0

_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class _Masks:
    never: frozenset[int]
    letter_start: tuple[int, ...]
    digit_start: tuple[int, ...]


class Generator:
    """Decodes continuations from one model; build once per model and reuse."""

    def __init__(self, model: NGramModel) -> None:
        self.model = model
        self._masks = _build_masks(model)

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        topic: str | None = None,
        reply: bool = False,
    ) -> tuple[Generation, ...]:
        """`params.n` continuations of `prompt`.

        `topic` is the text related training passages are retrieved for (default: the
        prompt). With `reply` (chat), the first token may be neither a newline nor
        end-of-text, and leading whitespace is stripped from the result.
        """
        passage = self.model.passage(prompt if topic is None else topic)
        return tuple(self._decoder(params, passage, reply, i).run(prompt) for i in range(params.n))

    def stream(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        topic: str | None = None,
        reply: bool = False,
    ) -> Iterator[StreamEvent]:
        """`generate`, choice after choice, as the tokens are produced."""
        passage = self.model.passage(prompt if topic is None else topic)
        for i in range(params.n):
            yield from self._decoder(params, passage, reply, i).stream(prompt, i)

    def _decoder(
        self, params: SamplingParams, passage: Passage | None, reply: bool, index: int
    ) -> _Decoder:
        return _Decoder(self.model, self._masks, params, passage, reply, _rng(params.seed, index))


def _rng(seed: int | None, index: int) -> random.Random:
    return random.Random(f"gantry-small:{seed}:{index}") if seed is not None else random.Random()


class _Decoder:
    def __init__(
        self,
        model: NGramModel,
        masks: _Masks,
        params: SamplingParams,
        passage: Passage | None,
        reply: bool,
        rng: random.Random,
    ) -> None:
        self.model = model
        self.masks = masks
        self.params = params
        self.passage = passage
        self.reply = reply
        self.rng = rng
        self.counts: dict[int, int] = {}
        self.text = ""
        self.finish = "length"
        self.pieces: list[str] = []
        self.size = len(model.vocabulary)
        self.bias = [(t, b) for t, b in params.logit_bias.items() if 0 <= t < self.size]
        self.stops = tuple(s for s in params.stop if s)
        if reply:
            self.stops += ("\nuser:", "\nsystem:", "\nassistant:")

    def _decode(self, prompt: str) -> Iterator[tuple[str, TokenLogprob | None]]:
        """Yields each generated piece (and its logprob entry); `self.text` holds the output
        so far, already cut before a stop sequence, and `self.finish` how it ended."""
        u, v = self.model.context(prompt)
        self.text, self.finish, self.pieces = "", "length", []
        for _ in range(self.params.max_tokens):
            logits = self._logits(u, v, self.pieces)
            weights = self._weights(logits)
            token = self._choose(logits, weights)
            if token == EOT_ID:
                self.finish = "stop"
                return
            piece = self.model.vocabulary.piece(token)
            entry = None
            if weights is not None and self.params.logprobs:
                entry = self._logprob(logits, weights, token, piece)
            self.pieces.append(piece)
            self.counts[token] = self.counts.get(token, 0) + 1
            u, v = v, token
            cut = _find_stop(self.text, piece, self.stops)
            self.text += piece
            if cut is not None:
                self.text, self.finish = self.text[:cut], "stop"
                yield piece, entry
                return
            yield piece, entry

    def run(self, prompt: str) -> Generation:
        entries = [entry for _, entry in self._decode(prompt) if entry is not None]
        text = self.text
        end = len(text)
        if self.reply:
            text = text.lstrip()
        start = end - len(text)
        logprobs = (
            tuple(_within(entries, self.pieces, start, end)) if self.params.logprobs else None
        )
        return Generation(text, self.finish, tokenizer.count(text), logprobs)

    def stream(self, prompt: str, index: int) -> Iterator[StreamEvent]:
        """The text `run` would return, released as it is generated. Text that might be the
        start of a stop sequence is held back until the next token settles it."""
        emitted = pending = 0
        for _ in self._decode(prompt):
            pending += 1
            start = _lead(self.text) if self.reply else 0
            safe = len(self.text) - _holdback(self.text, self.stops)
            emitted = max(emitted, start)
            if safe > emitted:
                yield TextDelta(index, self.text[emitted:safe], pending)
                emitted, pending = safe, 0
        start = _lead(self.text) if self.reply else 0
        emitted = max(emitted, start)
        if len(self.text) > emitted or pending:
            yield TextDelta(index, self.text[emitted:], pending)
        yield ChoiceDone(index, self.finish, tokenizer.count(self.text[start:]))

    def _logits(self, u: int, v: int, pieces: Sequence[str]) -> list[float]:
        p = self.params
        logits = self.model.log_probs(u, v, self.passage)
        for token, n in self.counts.items():
            logits[token] -= n * p.frequency_penalty + p.presence_penalty
        for token, bias in self.bias:
            logits[token] += bias
        for token in self._blocked(pieces):
            logits[token] = -math.inf
        return logits

    def _blocked(self, pieces: Sequence[str]) -> Iterable[int]:
        yield from self.masks.never
        if not pieces:
            if self.reply:
                yield from (EOT_ID, self.model.vocabulary.id_of("\n"))
            return
        last = pieces[-1]
        if _LETTER.fullmatch(last[-1]) or (
            last == "'" and len(pieces) > 1 and _LETTER.fullmatch(pieces[-2][-1])
        ):
            yield from self.masks.letter_start
        elif last[-1].isdecimal():
            yield from self.masks.digit_start

    @property
    def _temperature(self) -> float:
        """The sampling temperature, or 1 for greedy decoding (used for logprobs only)."""
        return self.params.temperature if self.params.temperature > 0 else 1.0

    def _weights(self, logits: list[float]) -> list[float] | None:
        if self.params.temperature <= 0 and not self.params.logprobs:
            return None
        return _softmax_weights(logits, self._temperature)

    def _choose(self, logits: list[float], weights: list[float] | None) -> int:
        if weights is None or self.params.temperature <= 0:
            return logits.index(max(logits))
        candidates: Sequence[int] = range(self.size)
        if self.params.top_p < 1.0:
            candidates = _nucleus(weights, self.params.top_p)
            weights = [weights[i] for i in candidates]
        cumulative = list(itertools.accumulate(weights))
        pick = bisect_right(cumulative, self.rng.random() * cumulative[-1])
        return candidates[min(pick, len(candidates) - 1)]

    def _logprob(
        self, logits: list[float], weights: list[float], token: int, piece: str
    ) -> TokenLogprob:
        inverse = 1.0 / self._temperature
        offset = max(logits) * inverse + math.log(math.fsum(weights))

        def logprob(i: int) -> float:
            return max(LOGPROB_FLOOR, logits[i] * inverse - offset)

        top = heapq.nlargest(self.params.top_logprobs, range(self.size), key=logits.__getitem__)
        vocabulary = self.model.vocabulary
        alternatives = tuple(TopLogprob(vocabulary.piece(i), logprob(i)) for i in top)
        return TokenLogprob(piece, logprob(token), alternatives)


def _lead(text: str) -> int:
    """Index of the first non-whitespace character (len(text) if there is none yet)."""
    return len(text) - len(text.lstrip())


def _holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


def _softmax_weights(logits: Sequence[float], temperature: float) -> list[float]:
    """Unnormalised softmax of `logits / temperature`; the largest weight is 1."""
    top = max(logits)
    inverse = 1.0 / temperature
    exp = math.exp
    return [exp((x - top) * inverse) for x in logits]


def _nucleus(weights: Sequence[float], top_p: float) -> list[int]:
    order = sorted(range(len(weights)), key=weights.__getitem__, reverse=True)
    threshold = top_p * math.fsum(weights)
    kept: list[int] = []
    mass = 0.0
    for i in order:
        kept.append(i)
        mass += weights[i]
        if mass >= threshold:
            break
    return kept


def _find_stop(text: str, piece: str, stops: Sequence[str]) -> int | None:
    """Index in `text + piece` where the earliest stop sequence completed by `piece` starts."""
    if not stops:
        return None
    joined = text + piece
    found = [i for s in stops if (i := joined.find(s, max(0, len(text) - len(s) + 1))) >= 0]
    return min(found) if found else None


def _within(
    entries: Sequence[TokenLogprob], pieces: Sequence[str], start: int, end: int
) -> Iterable[TokenLogprob]:
    """The entries of the tokens that overlap characters `start` to `end` of the output."""
    offset = 0
    for entry, piece in zip(entries, pieces, strict=True):
        if offset >= end:
            break
        if offset + len(piece) > start:
            yield entry
        offset += len(piece)


def _build_masks(model: NGramModel) -> _Masks:
    never = {UNK_ID}
    letters: list[int] = []
    digits: list[int] = []
    for token, piece in enumerate(model.vocabulary.pieces):
        if token <= UNK_ID:
            continue
        if piece.isspace() and piece != "\n":
            never.add(token)
        elif _LETTER.fullmatch(piece[0]):
            letters.append(token)
        elif piece[0].isdecimal():
            digits.append(token)
    return _Masks(frozenset(never), tuple(letters), tuple(digits))
