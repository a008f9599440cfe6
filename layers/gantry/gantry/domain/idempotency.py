"""Idempotency keys: the first response to a POST carrying `Idempotency-Key` is kept for
24 hours and replayed to a retry with the same body; a different body, or a retry while
the first request still runs, is refused with 409.

Keys are scoped to the API key that sent them (two keys never share a record, so a
narrower key cannot replay a wider key's response), and a request's fingerprint covers
its method, path, query and body (JSON bodies canonically: key order and whitespace do not
matter). Only successful (2xx) responses are kept: after an error the record is dropped so
that a retry runs again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gantry.domain.errors import Conflict, InvalidRequest

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL_SECONDS = 24 * 3600
# How long a claimed key blocks retries if its request never finishes (the function died).
LEASE_SECONDS = 60
STREAM_LEASE_SECONDS = 900
RETRY_AFTER_SECONDS = 1

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, no spaces


class InProgress(Conflict):
    """The first request with this key is still running."""

    default_code = "idempotency_in_progress"
    retryable = True


def validate_key(value: str) -> str:
    if not _KEY.match(value):
        raise InvalidRequest(
            f"Invalid {HEADER}: use 1 to 255 visible ASCII characters without spaces, such "
            "as a UUID.",
            code="invalid_value",
            param=HEADER,
        )
    return value


def record_id(key_id: str, idempotency_key: str) -> str:
    return hashlib.sha256(f"{key_id}\x00{idempotency_key}".encode()).hexdigest()


def fingerprint(method: str, path: str, query: str, content_type: str, body: bytes) -> str:
    """What makes two requests "the same": JSON bodies are compared canonically."""
    canonical: Any = body.hex()
    if "json" in content_type.lower():
        with contextlib.suppress(ValueError):
            canonical = json.loads(body)
    text = json.dumps(
        [method.upper(), path, query, canonical], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


def wants_stream(content_type: str, body: bytes) -> bool:
    if "json" not in content_type.lower():
        return False
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("stream") is True


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class IdempotencyRecord:
    fingerprint: str
    status: Literal["INPROGRESS", "COMPLETED"]
    response: StoredResponse | None  # None when completed but too large to keep


class IdempotencyStore(Protocol):
    def begin(
        self,
        record: str,
        fingerprint: str,
        *,
        now: float,
        lease_seconds: int,
        org_id: str,
        key_id: str,
    ) -> IdempotencyRecord | None:
        """Claim the key: None when this request now owns it, else the live record."""
        ...

    def complete(self, record: str, fingerprint: str, response: StoredResponse, now: float) -> None:
        """Keep the response for TTL_SECONDS (or mark the key used if it is too large)."""
        ...

    def abandon(self, record: str, fingerprint: str) -> None:
        """Drop this request's claim so that a retry runs again."""
        ...


def replay(existing: IdempotencyRecord, fingerprint_: str) -> StoredResponse:
    """The response to replay for a retry, or the 409 that refuses it."""
    if existing.fingerprint != fingerprint_:
        raise Conflict(
            f"This {HEADER} was already used with a different request (method, path, query "
            "or body). Use a new key for a new request.",
            code="idempotency_conflict",
            param=HEADER,
        )
    if existing.status == "INPROGRESS":
        raise InProgress(
            f"A request with this {HEADER} is still being processed. Retry after it "
            "completes to receive its response.",
            param=HEADER,
            retry_after=RETRY_AFTER_SECONDS,
        )
    if existing.response is None:
        raise Conflict(
            f"The request with this {HEADER} completed, but its response was too large to "
            "keep for replay. It was not run again; use a new key to run it again.",
            code="idempotency_not_replayable",
            param=HEADER,
        )
    return existing.response
