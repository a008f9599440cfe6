"""The "echo" model: returns its input, cut to `max_tokens` and at the first stop sequence."""

from __future__ import annotations

import time
from collections.abc import Iterator

from gantry.adapters.local import tokenizer
from gantry.ports import (
    ChoiceDone,
    Generation,
    SamplingParams,
    StreamEvent,
    TextDelta,
    TokenLogprob,
    TopLogprob,
)


def echo(text: str, params: SamplingParams) -> tuple[Generation, ...]:
    """`params.n` identical choices. Every emitted token has probability 1 (logprob 0)."""
    pieces = tokenizer.split(text)
    out = "".join(pieces[: params.max_tokens])
    stops = [i for stop in params.stop if stop and (i := out.find(stop)) >= 0]
    if stops:
        out, finish = out[: min(stops)], "stop"
    else:
        finish = "length" if len(pieces) > params.max_tokens else "stop"
    logprobs = None
    if params.logprobs:
        logprobs = tuple(
            TokenLogprob(p, 0.0, (TopLogprob(p, 0.0),)[: params.top_logprobs])
            for p in tokenizer.split(out)
        )
    return (Generation(out, finish, tokenizer.count(out), logprobs),) * params.n


def echo_stream(
    text: str, params: SamplingParams, pace_seconds: float = 0.0
) -> Iterator[StreamEvent]:
    """`echo`, one token per delta, each `pace_seconds` after the previous one."""
    for index, choice in enumerate(echo(text, params)):
        for piece in tokenizer.split(choice.text):
            if pace_seconds:
                time.sleep(pace_seconds)
            yield TextDelta(index, piece, 1)
        yield ChoiceDone(index, choice.finish_reason, choice.completion_tokens)
