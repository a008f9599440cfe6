"""Fast JSON responses and the metadata headers inference responses carry."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any

from starlette.responses import Response

from gantry.domain.inference import Outcome
from gantry.domain.lifecycle import Lifecycle, model_lifecycle
from gantry.domain.metering import Admission
from gantry.domain.registry import ModelSpec
from gantry.http.ids import unique_hex


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
    return f"{prefix}-{unique_hex()}"


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def deprecation_headers(
    deprecated_on: date | None,
    sunset_on: date | None,
    successor: str | None,
    guide: str | None = None,
) -> dict[str, str]:
    """RFC 9745 `Deprecation`, RFC 8594 `Sunset`, and `Link`s to the migration guide
    (rel="deprecation") and to the successor (rel="successor-version")."""
    headers: dict[str, str] = {}
    if deprecated_on is not None:
        headers["deprecation"] = f"@{int(_midnight(deprecated_on).timestamp())}"
    if sunset_on is not None:
        headers["sunset"] = format_datetime(_midnight(sunset_on), usegmt=True)
    links = []
    if guide is not None and headers:
        links.append(f'<{guide}>; rel="deprecation"')
    if successor is not None and headers:
        links.append(f'<{successor}>; rel="successor-version"')
    if links:
        headers["link"] = ", ".join(links)
    return headers


def lifecycle_headers(lifecycle: Lifecycle | None) -> dict[str, str]:
    if lifecycle is None:
        return {}
    return deprecation_headers(
        lifecycle.deprecated_on, lifecycle.sunset_on, lifecycle.successor, lifecycle.guide
    )


def model_headers(spec: ModelSpec) -> dict[str, str]:
    headers = {"x-model-version": spec.version}
    headers.update(lifecycle_headers(model_lifecycle(spec)))
    return headers


def inference_headers(outcome: Outcome, admission: Admission) -> dict[str, str]:
    headers = model_headers(outcome.spec)
    headers["x-cost-usd"] = f"{outcome.cost_usd:.10f}".rstrip("0").rstrip(".") or "0"
    headers.update(admission.headers)
    headers.update(fallback_headers(admission.model, outcome.spec))
    return headers


def fallback_headers(requested: ModelSpec, served: ModelSpec) -> dict[str, str]:
    """When a registry fallback served the request (the requested model's provider failed):
    the model that did, which is also the body's `model`."""
    if requested.id == served.id:
        return {}
    return {"x-gantry-fallback-model": served.id, "x-gantry-requested-model": requested.id}


def usage(
    prompt_tokens: int, completion_tokens: int | None, cached_tokens: int = 0
) -> dict[str, Any]:
    """OpenAI's usage object; a cache hit adds `prompt_tokens_details.cached_tokens`."""
    body: dict[str, Any] = {"prompt_tokens": prompt_tokens}
    if completion_tokens is not None:
        body["completion_tokens"] = completion_tokens
    body["total_tokens"] = prompt_tokens + (completion_tokens or 0)
    if cached_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return body
