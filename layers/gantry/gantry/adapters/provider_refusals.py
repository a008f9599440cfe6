"""Refusals every provider phrases its own way: a prompt too long for the model, and a
request its content filter blocked."""

from __future__ import annotations

import re

from gantry.domain.errors import ContentPolicyViolation, ContextLengthExceeded
from gantry.domain.registry import ModelSpec

_TOO_LONG = re.compile(
    r"context length|context window|maximum context|too many tokens|prompt is too long|"
    r"input is too long|too long for|exceeds? the (model'?s )?(max|context)|"
    r"input length .* exceed|max(imum)? input",
    re.IGNORECASE,
)
_POLICY = re.compile(r"content (management )?policy|content[_ ]filter|safety system", re.I)


def says_too_long(message: str) -> bool:
    return bool(_TOO_LONG.search(message))


def says_policy(message: str) -> bool:
    return bool(_POLICY.search(message))


def context_refused(spec: ModelSpec, prompt_tokens: int, max_tokens: int) -> ContextLengthExceeded:
    return ContextLengthExceeded(
        f"The model '{spec.id}' cannot take this request: its context window is "
        f"{spec.context_window} tokens. Shorten the prompt or lower max_tokens.",
        param="messages",
        details={
            "prompt_tokens": prompt_tokens,
            "max_tokens": max_tokens,
            "context_window": spec.context_window,
        },
    )


def policy_refused() -> ContentPolicyViolation:
    """Deliberately vague: nothing that helps rephrase around the filter."""
    return ContentPolicyViolation("The request was refused by the content policy.")
