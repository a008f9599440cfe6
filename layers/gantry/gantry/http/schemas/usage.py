"""GET /v1/usage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gantry.http.schemas.base import WireModel


class UsageTotals(WireModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    cached_requests: int = Field(description="Requests answered from the response cache.")
    cached_tokens: int = Field(description="Prompt tokens of those requests (cached price).")


class UsageResult(UsageTotals):
    """One group of a bucket; the grouping fields appear when `group_by` names them."""

    model: str | None = None
    endpoint: str | None = None
    key_id: str | None = None


class UsageBucket(WireModel):
    object: Literal["bucket"]
    start_time: int
    end_time: int
    results: list[UsageResult]


class LimitStatus(WireModel):
    scope: Literal["key", "organization"]
    dimension: Literal[
        "requests_per_minute",
        "tokens_per_minute",
        "tokens_per_day",
        "concurrent_requests",
        "monthly_cost",
    ]
    limit: float
    burst: int | None = None
    used: float
    remaining: float
    reset_at: float | None
    percent: int


class QuotaWarning(WireModel):
    scope: Literal["key", "organization"]
    dimension: Literal["tokens_per_day", "monthly_cost"]
    percent: int
    threshold: int
    period: str
    limit: float
    used: float
    message: str


class UsageReport(WireModel):
    object: Literal["usage.report"]
    scope: Literal["key", "organization"]
    org_id: str
    key_id: str | None
    start_time: int
    end_time: int
    bucket_width: Literal["1h", "1d"]
    group_by: list[Literal["model", "endpoint", "key_id"]]
    totals: UsageTotals
    buckets: list[UsageBucket]
    limits: list[LimitStatus]
    warnings: list[QuotaWarning]
