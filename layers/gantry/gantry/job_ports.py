"""Interfaces the files, fine-tuning and webhook domains depend on (adapters implement them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gantry.domain.batches import Batch, LineResult, RequestCounts
from gantry.domain.files import Example, FileObject
from gantry.domain.jobs import FineTuningJob, JobEvent
from gantry.domain.registry import ModelSpec
from gantry.domain.webhooks import Delivery, Target, WebhookEndpoint


class BlobWriter(Protocol):
    """An object written in parts; nobody sees it before `close`."""

    size: int

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class BlobStore(Protocol):
    """File contents (S3)."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def writer(self, key: str, content_type: str) -> BlobWriter: ...

    def stream(self, key: str) -> Iterator[bytes]:
        """The object's bytes in parts, opened before the first part is asked for (so a
        missing or unreadable object fails here, not half-way through a response)."""
        ...

    def download_url(self, key: str, filename: str, seconds: int) -> str:
        """A URL that serves the object, as an attachment named `filename`, for `seconds`."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def uri(self, key: str) -> str:
        """Where a service that reads the object itself (Bedrock) finds it: s3://bucket/key."""
        ...


class FileIndex(Protocol):
    """File metadata, owner-scoped listings."""

    def put_file(self, file: FileObject, key: str) -> None: ...

    def get_file(self, file_id: str) -> tuple[FileObject, str] | None:
        """The file and the key of its contents."""
        ...

    def list_files(
        self, org_id: str, purpose: str | None, limit: int, after: str | None, newest_first: bool
    ) -> tuple[list[FileObject], bool]: ...

    def delete_file(self, file_id: str) -> bool: ...


class JobStore(Protocol):
    def create_job(self, job: FineTuningJob) -> None: ...

    def get_job(self, job_id: str) -> FineTuningJob | None: ...

    def list_jobs(
        self, org_id: str, limit: int, after: str | None
    ) -> tuple[list[FineTuningJob], bool]:
        """Newest first, starting after the job id `after`."""
        ...

    def transition(
        self, job_id: str, allowed: Sequence[str], status: str, fields: Mapping[str, Any]
    ) -> bool:
        """Set `status` and `fields` if the job's status is one of `allowed`; False if not."""
        ...

    def set_fields(self, job_id: str, fields: Mapping[str, Any]) -> None: ...

    def add_event(self, job_id: str, event: JobEvent, expires_at: float) -> None: ...

    def list_events(
        self, job_id: str, limit: int, after: str | None
    ) -> tuple[list[JobEvent], bool]:
        """Newest first, starting after the event id `after`."""
        ...


class BatchStore(Protocol):
    def create_batch(self, batch: Batch) -> None: ...

    def get_batch(self, batch_id: str) -> Batch | None: ...

    def list_batches(self, org_id: str, limit: int, after: str | None) -> tuple[list[Batch], bool]:
        """Newest first, starting after the batch id `after`."""
        ...

    def transition(
        self, batch_id: str, allowed: Sequence[str], status: str, fields: Mapping[str, Any]
    ) -> bool:
        """Set `status` and `fields` if the batch's status is one of `allowed`; False if not."""
        ...

    def set_fields(self, batch_id: str, fields: Mapping[str, Any]) -> None: ...

    def chunk_results(self, batch_id: str, index: int) -> str | None:
        """Where the recorded chunk's results are stored ("" when its record does not say:
        the worker's usual key); None if it is not recorded."""
        ...

    def record_chunk(
        self, batch_id: str, index: int, counts: RequestCounts, unrun: int, results: str
    ) -> bool:
        """Add a finished chunk's counts to the batch, with where its results are stored,
        once per chunk; False if the chunk was recorded already."""
        ...

    def unrun_lines(self, batch_id: str) -> int:
        """Lines of the batch that expired or were cancelled before they ran."""
        ...


class LineRunner(Protocol):
    """Runs one request of a batch as the key that created it, exactly as the API would."""

    def run(
        self, key_id: str, request_id: str, url: str, body: Mapping[str, Any]
    ) -> LineResult: ...


class WebhookStore(Protocol):
    def put_endpoint(self, endpoint: WebhookEndpoint) -> None: ...

    def get_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None: ...

    def list_endpoints(self, org_id: str) -> list[WebhookEndpoint]: ...

    def delete_endpoint(self, endpoint_id: str) -> bool: ...

    def subscribed_orgs(self, event_type: str) -> list[str]:
        """Organizations with an endpoint subscribed to `event_type`."""
        ...

    def create_delivery(self, delivery: Delivery) -> bool:
        """Record a new delivery; False if this event was already recorded for the endpoint."""
        ...

    def get_delivery(self, endpoint_id: str, key: str) -> Delivery | None: ...

    def update_delivery(self, delivery: Delivery) -> None: ...

    def list_deliveries(self, endpoint_id: str, limit: int) -> list[Delivery]:
        """Newest first."""
        ...


class PendingEvents(Protocol):
    """Events other parts of the platform recorded for delivery (quota crossings)."""

    def pending(self, org_id: str) -> list[tuple[str, str, dict[str, Any], float]]:
        """(event id, type, payload, created_at) of the organization's undelivered events."""
        ...

    def mark_queued(self, org_id: str, event_id: str) -> bool: ...


class Workflow(Protocol):
    """The fine-tuning state machine."""

    def start(self, name: str, payload: Mapping[str, Any]) -> str:
        """Start an execution named `name` (idempotent for the same input); its id."""
        ...

    def stop(self, execution_id: str, error: str, cause: str) -> None: ...


# What a workflow step returns when it goes on in a new queue message: its task token is
# answered there, not now.
CONTINUED: dict[str, Any] = {"continued": True}


class TaskCallbacks(Protocol):
    """Answers to a state machine waiting on a task token. Each returns False when the
    task no longer waits (the execution was stopped, or the task timed out)."""

    def heartbeat(self, token: str) -> bool: ...

    def succeed(self, token: str, output: Mapping[str, Any]) -> bool: ...

    def fail(self, token: str, error: str, cause: str) -> bool: ...


class MessageQueue(Protocol):
    def send(self, body: Mapping[str, Any], delay_seconds: int = 0) -> None: ...


@dataclass(frozen=True)
class TrainedModel:
    artifact: bytes  # what `install` needs to serve the model, stored with the job
    trained_tokens: int
    metrics: Mapping[str, float]


# Called after each epoch with (epoch, metrics); returns False to stop training (cancelled).
Progress = Callable[[int, Mapping[str, float]], bool]


class Trainer(Protocol):
    """Fine-tunes the models of one provider."""

    def example_formats(self, base: ModelSpec) -> tuple[str, ...]:
        """The training file formats this base model learns from; () if not fine-tunable."""
        ...

    def train(
        self,
        base: ModelSpec,
        examples: Sequence[Example],
        n_epochs: int,
        learning_rate_multiplier: float,
        progress: Progress,
        first_epoch: int = 1,
    ) -> TrainedModel | None:
        """None if `progress` asked to stop. Epochs before `first_epoch` ran in an earlier
        invocation: training picks up where it stopped."""
        ...

    def evaluate(
        self, base: ModelSpec, artifact: bytes, held_out: Sequence[Example]
    ) -> dict[str, float]: ...

    def install(self, provider_model_id: str, base: ModelSpec, artifact: bytes) -> None:
        """Serve the trained model under `provider_model_id` in this process."""
        ...


class Resolver(Protocol):
    def resolve(self, host: str, port: int) -> list[str]:
        """Every IP address `host` resolves to (empty if it does not)."""
        ...


class DeliveryFailed(Exception):
    """The receiver could not be reached (connection, TLS, timeout)."""


class Sender(Protocol):
    def post(self, target: Target, address: str, headers: Mapping[str, str], body: bytes) -> int:
        """POST to the target at exactly `address` (no new DNS lookup, no redirects); the
        response status, or DeliveryFailed."""
        ...
