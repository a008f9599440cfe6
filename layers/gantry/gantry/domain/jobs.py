"""Fine-tuning jobs: states, hyperparameters, model ids, events, polling and retention rules.

A job moves `validating_files -> queued -> running -> succeeded`, or to `failed` or
`cancelled` from any of the first three. The workflow (a Step Functions state machine)
drives it; everything here is pure.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gantry.domain.errors import InvalidRequest

VALIDATING = "validating_files"
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
ACTIVE = (VALIDATING, QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
STATUSES = (*ACTIVE, *TERMINAL)

# Suggested seconds between polls of a job in each active state (Retry-After).
POLL_SECONDS = {VALIDATING: 2, QUEUED: 10, RUNNING: 5}

MIN_TRAINING_EXAMPLES = 10
MAX_EPOCHS = 50
DEFAULT_EPOCHS = 3
MAX_SUFFIX_LENGTH = 18
_SUFFIX = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_JOB_ID = re.compile(r"^ftjob-[A-Za-z0-9]{8,64}$")

FAILURE_MESSAGES = {
    "States.Timeout": "The training worker stopped responding and the retries ran out.",
    "Bedrock.CustomizationFailed": "The Amazon Bedrock model customization job failed.",
}


def new_job_id() -> str:
    return f"ftjob-{secrets.token_hex(12)}"


def new_event_id() -> str:
    return f"ftevent-{secrets.token_hex(12)}"


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.match(value))


@dataclass(frozen=True)
class Hyperparameters:
    n_epochs: int = DEFAULT_EPOCHS
    learning_rate_multiplier: float = 1.0
    batch_size: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_epochs": self.n_epochs,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Hyperparameters:
        return cls(
            int(raw.get("n_epochs", DEFAULT_EPOCHS)),
            float(raw.get("learning_rate_multiplier", 1.0)),
            int(raw.get("batch_size", 1)),
        )


def parse_hyperparameters(raw: Mapping[str, Any] | None) -> Hyperparameters:
    """Resolve OpenAI's hyperparameters ("auto" or a value each) to concrete values."""
    raw = raw or {}
    bounds: dict[str, tuple[type, float, float]] = {
        "n_epochs": (int, 1, MAX_EPOCHS),
        "learning_rate_multiplier": (float, 0.01, 10.0),
        "batch_size": (int, 1, 256),
    }
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in bounds:
            raise InvalidRequest(
                f"Unknown hyperparameter '{name}'. Use n_epochs, learning_rate_multiplier or "
                "batch_size.",
                code="unknown_parameter",
                param=f"hyperparameters.{name}",
            )
        if value == "auto":
            continue
        kind, low, high = bounds[name]
        ok_type = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int:
            ok_type = isinstance(value, int) and not isinstance(value, bool)
        if not ok_type or not low <= value <= high:
            what = "an integer" if kind is int else "a number"
            raise InvalidRequest(
                f"'hyperparameters.{name}' must be \"auto\" or {what} from {low:g} to {high:g}.",
                code="invalid_value",
                param=f"hyperparameters.{name}",
            )
        values[name] = kind(value)
    return Hyperparameters(**values)


def validate_suffix(suffix: str | None) -> str:
    if suffix is None:
        return ""
    if not 1 <= len(suffix) <= MAX_SUFFIX_LENGTH or not _SUFFIX.match(suffix):
        raise InvalidRequest(
            f"'suffix' must be 1 to {MAX_SUFFIX_LENGTH} characters of lowercase letters, digits, "
            "'-' and '_', starting with a letter or digit.",
            code="invalid_value",
            param="suffix",
        )
    return suffix


def fine_tuned_model_id(base: str, org_id: str, suffix: str, job_id: str) -> str:
    return f"ft:{base}:{org_id}:{suffix}:{job_id}"


@dataclass(frozen=True)
class FineTunedModelId:
    base: str
    org_id: str
    suffix: str
    job_id: str


def parse_fine_tuned_model(model_id: str) -> FineTunedModelId | None:
    """`ft:<base>:<org>:<suffix>:<job id>` (the base may itself contain ':')."""
    if not model_id.startswith("ft:"):
        return None
    parts = model_id[3:].rsplit(":", 3)
    if len(parts) != 4 or not all(parts[i] for i in (0, 1, 3)) or not is_job_id(parts[3]):
        return None
    return FineTunedModelId(*parts)


@dataclass(frozen=True)
class JobError:
    code: str
    message: str
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param}


def failure_from_workflow(error_code: str, detail: str | None) -> JobError:
    """The job error for a failure the workflow recorded: a worker's JSON detail, or the
    Step Functions error name of a timeout or service failure."""
    if detail:
        try:
            raw = json.loads(detail)
        except json.JSONDecodeError:
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("message"), str):
            return JobError(str(raw.get("code") or "job_failed"), raw["message"], raw.get("param"))
    message = FAILURE_MESSAGES.get(error_code, f"The job failed in the workflow ({error_code}).")
    code = "worker_timeout" if error_code == "States.Timeout" else "job_failed"
    return JobError(code, message)


@dataclass(frozen=True)
class FineTuningJob:
    id: str
    org_id: str
    model: str
    training_file: str
    fine_tuned_model_name: str  # the id the model gets if the job succeeds
    provider: str  # "local" (embedded models, SQS workers) or "bedrock"
    created_at: float
    expires_at: float  # deletion time (TTL); see `retention_deadline`
    status: str = VALIDATING
    validation_file: str | None = None
    suffix: str = ""
    seed: int = 0
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    metadata: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    estimated_finish: float | None = None
    trained_tokens: int | None = None
    fine_tuned_model: str | None = None
    provider_model_id: str | None = None
    result_files: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    error: JobError | None = None
    execution_id: str | None = None
    artifact_key: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def as_dict(self) -> dict[str, Any]:
        hyper = self.hyperparameters.as_dict()
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": int(self.created_at),
            "error": self.error.as_dict() if self.error else None,
            "fine_tuned_model": self.fine_tuned_model,
            "finished_at": _seconds(self.finished_at),
            "hyperparameters": hyper,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
            "model": self.model,
            "object_model": None,
            "organization_id": self.org_id,
            "result_files": list(self.result_files),
            "seed": self.seed,
            "status": self.status,
            "trained_tokens": self.trained_tokens,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "integrations": [],
            "metadata": self.metadata or None,
            "user_provided_suffix": self.suffix or None,
            "estimated_finish": _seconds(self.estimated_finish) if self.active else None,
        }

    def with_status(self, status: str, **changes: Any) -> FineTuningJob:
        return replace(self, status=status, **changes)


def _seconds(value: float | None) -> int | None:
    return int(value) if value is not None else None


@dataclass(frozen=True)
class JobEvent:
    id: str
    created_at: float
    message: str
    level: str = "info"  # info | warn | error
    type: str = "message"  # message | metrics
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "fine_tuning.job.event",
            "created_at": int(self.created_at),
            "level": self.level,
            "type": self.type,
            "message": self.message,
            "data": self.data or None,
        }


def retry_after(job: FineTuningJob) -> int | None:
    """Seconds a client should wait before polling the job again; None once it is final."""
    return POLL_SECONDS.get(job.status)


def retention_deadline(job: FineTuningJob, retention_seconds: float) -> float | None:
    """When a finished job (and its events) stops being served; None while it runs."""
    if job.status not in TERMINAL:
        return None
    finished = job.finished_at if job.finished_at is not None else job.created_at
    return finished + retention_seconds


def expired(job: FineTuningJob, retention_seconds: float, now: float) -> bool:
    deadline = retention_deadline(job, retention_seconds)
    return deadline is not None and now >= deadline
