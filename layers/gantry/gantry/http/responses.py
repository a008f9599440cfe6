"""Fast JSON responses and the metadata headers inference responses carry."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any

from starlette.responses import Response

from gantry.domain.inference import Outcome
from gantry.domain.metering import Admission
from gantry.domain.registry import ModelSpec


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        content=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type="application/json",
        headers=dict(headers) if headers else None,
    )


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def deprecation_headers(
    deprecated_on: date | None, sunset_on: date | None, successor: str | None
) -> dict[str, str]:
    """RFC 9745 `Deprecation`, RFC 8594 `Sunset`, and a `Link` to the successor."""
    headers: dict[str, str] = {}
    if deprecated_on is not None:
        headers["deprecation"] = f"@{int(_midnight(deprecated_on).timestamp())}"
    if sunset_on is not None:
        headers["sunset"] = format_datetime(_midnight(sunset_on), usegmt=True)
    if successor is not None and headers:
        headers["link"] = f'<{successor}>; rel="successor-version"'
    return headers


def model_headers(spec: ModelSpec) -> dict[str, str]:
    successor = f"/v1/models/{spec.replacement}" if spec.replacement else None
    headers = {"x-model-version": spec.version}
    headers.update(deprecation_headers(spec.deprecation_date, spec.sunset_date, successor))
    return headers


def inference_headers(outcome: Outcome, admission: Admission) -> dict[str, str]:
    headers = model_headers(outcome.spec)
    headers["x-cost-usd"] = f"{outcome.cost_usd:.10f}".rstrip("0").rstrip(".") or "0"
    headers.update(admission.headers)
    return headers


def usage(prompt_tokens: int, completion_tokens: int | None) -> dict[str, int]:
    body = {"prompt_tokens": prompt_tokens}
    if completion_tokens is not None:
        body["completion_tokens"] = completion_tokens
    body["total_tokens"] = prompt_tokens + (completion_tokens or 0)
    return body
