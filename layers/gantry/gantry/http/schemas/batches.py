"""Wire shapes of batches (OpenAI's)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from gantry.domain.batches import COMPLETION_WINDOWS, ENDPOINTS
from gantry.http.schemas.base import StrictRequest, WireModel


class BatchRequest(StrictRequest):
    input_file_id: str = Field(
        min_length=1, max_length=128, description="A file uploaded with purpose 'batch'."
    )
    endpoint: str = Field(max_length=64, description=f"One of {', '.join(ENDPOINTS)}.")
    completion_window: str = Field(
        max_length=16, description=f"One of {', '.join(COMPLETION_WINDOWS)}."
    )
    metadata: dict[str, str] | None = None


class RequestCountsModel(WireModel):
    total: int
    completed: int
    failed: int


class BatchModel(WireModel):
    id: str
    object: str = "batch"
    endpoint: str
    errors: dict[str, Any] | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCountsModel
    metadata: dict[str, str] | None


class BatchList(WireModel):
    object: str = "list"
    data: list[BatchModel]
    first_id: str | None
    last_id: str | None
    has_more: bool
