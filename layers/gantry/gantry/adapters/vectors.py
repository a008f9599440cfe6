"""Embedding vectors shortened the way OpenAI's `dimensions` does it."""

from __future__ import annotations

import math
from collections.abc import Sequence


def truncate(vector: Sequence[float], dimensions: int | None) -> tuple[float, ...]:
    """The first `dimensions` components, scaled back to unit length."""
    if dimensions is None or dimensions >= len(vector):
        return tuple(vector)
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head)) or 1.0
    return tuple(x / norm for x in head)
