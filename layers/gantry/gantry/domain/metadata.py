"""Metadata: the free-form key-value pairs OpenAI-style objects carry (conversations,
fine-tuning jobs, batches), with OpenAI's limits."""

from __future__ import annotations

from collections.abc import Mapping

from gantry.domain.errors import InvalidRequest

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    items = dict(metadata or {})
    if len(items) > MAX_METADATA_KEYS:
        raise InvalidRequest(
            f"'metadata' holds at most {MAX_METADATA_KEYS} keys; got {len(items)}.",
            code="invalid_value",
            param="metadata",
        )
    for key, value in items.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS:
            raise InvalidRequest(
                f"Metadata keys are 1 to {MAX_METADATA_KEY_CHARS} characters; got one of "
                f"{len(key)}.",
                code="invalid_value",
                param="metadata",
            )
        if len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequest(
                f"Metadata values are at most {MAX_METADATA_VALUE_CHARS} characters; "
                f"'{key}' has {len(value)}.",
                code="invalid_value",
                param=f"metadata.{key}",
            )
    return items
