"""The "echo" model: returns its input, cut to `max_tokens` and at the first stop sequence."""

from __future__ import annotations

from gantry.adapters.local import tokenizer
from gantry.ports import Generation, SamplingParams, TokenLogprob, TopLogprob


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
