"""Wire shapes of files, fine-tuning jobs and webhooks (OpenAI's where it has them)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from gantry.domain.webhooks import EVENT_TYPES
from gantry.http.schemas.base import StrictRequest, WireModel


class FineTuningJobRequest(StrictRequest):
    model: str = Field(min_length=1, max_length=256, description="The base model to fine-tune.")
    training_file: str = Field(min_length=1, max_length=128, description="A fine-tune file id.")
    validation_file: str | None = Field(default=None, max_length=128)
    suffix: str | None = Field(default=None, description="Up to 18 characters for the model id.")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    hyperparameters: dict[str, int | float | str] | None = Field(
        default=None, description='n_epochs, learning_rate_multiplier, batch_size ("auto" each).'
    )
    metadata: dict[str, str] | None = None


class WebhookRequest(StrictRequest):
    url: str = Field(min_length=1, max_length=2048, description="https URL of the receiver.")
    event_types: list[str] | None = Field(
        default=None, description=f"Default: all of {', '.join(EVENT_TYPES)}."
    )
    description: str | None = Field(default=None, max_length=512)
    metadata: dict[str, str] | None = None


class FileObjectModel(WireModel):
    id: str
    object: str = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str


class FileList(WireModel):
    object: str = "list"
    data: list[FileObjectModel]
    has_more: bool


class Deleted(WireModel):
    id: str
    object: str
    deleted: bool


class FineTuningJobModel(WireModel):
    id: str
    object: str = "fine_tuning.job"
    status: str
    model: str
    fine_tuned_model: str | None
    created_at: int
    finished_at: int | None
    estimated_finish: int | None
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    result_files: list[str]
    hyperparameters: dict[str, Any]
    error: dict[str, Any] | None


class FineTuningJobList(WireModel):
    object: str = "list"
    data: list[FineTuningJobModel]
    has_more: bool


class FineTuningEventList(WireModel):
    object: str = "list"
    data: list[dict[str, Any]]
    has_more: bool


class FineTuningResults(WireModel):
    object: str = "fine_tuning.job.results"
    id: str
    status: str
    fine_tuned_model: str | None
    trained_tokens: int | None
    result_files: list[str]
    metrics: dict[str, float]


class WebhookEndpointModel(WireModel):
    id: str
    object: str = "webhook_endpoint"
    url: str
    event_types: list[str]
    created_at: int
    secret: str | None = Field(default=None, description="Only in the creation response.")


class WebhookEndpointList(WireModel):
    object: str = "list"
    data: list[WebhookEndpointModel]


class WebhookTest(WireModel):
    object: str = "webhook_test"
    event_id: str
    status: str


class DeliveryList(WireModel):
    object: str = "list"
    data: list[dict[str, Any]]
