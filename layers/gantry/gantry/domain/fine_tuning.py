"""Fine-tuning: creating, reading and cancelling jobs (the API side), the steps the workers
run for the state machine, and the catalog that makes a trained model servable.

The state machine (`infra/statemachines/fine_tuning.asl.json`) owns the order of the steps,
their timeouts and retries, and the final writes: the job's `succeeded` record and the
model's registration are conditional DynamoDB writes in the workflow itself, so a
cancelled job can never end up with a model, and a worker that dies is noticed by its
missed heartbeats rather than by anyone's memory.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from gantry.domain.errors import GantryError, InvalidRequest, NotFound, ServiceUnavailable
from gantry.domain.file_service import FileService
from gantry.domain.files import FINE_TUNE, FINE_TUNE_RESULTS, Example, FileObject, examples
from gantry.domain.jobs import (
    ACTIVE,
    CANCELLED,
    FAILED,
    MIN_TRAINING_EXAMPLES,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    VALIDATING,
    FineTuningJob,
    JobError,
    JobEvent,
    expired,
    fine_tuned_model_id,
    is_job_id,
    new_event_id,
    new_job_id,
    parse_fine_tuned_model,
    parse_hyperparameters,
    validate_suffix,
)
from gantry.domain.metadata import validate_metadata
from gantry.domain.registry import ModelSpec, Registry
from gantry.job_ports import (
    CONTINUED,
    BlobStore,
    JobStore,
    MessageQueue,
    TaskCallbacks,
    Trainer,
    Workflow,
)
from gantry.ports import Clock

logger = logging.getLogger("gantry.jobs")

BEDROCK = "bedrock"
HELD_OUT_SHARE = 0.2
BEDROCK_BASE_LEARNING_RATE = 0.00001
# What a training invocation keeps in hand after its last epoch (saving the model, answering
# the task) before it hands the rest of the epochs to a new invocation.
CONTINUE_MARGIN_SECONDS = 60.0


@dataclass(frozen=True)
class JobSettings:
    retention_seconds: float = 30 * 86_400
    max_job_seconds: float = 7 * 86_400  # no execution outlives this (items expire after)
    heartbeat_seconds: int = 120
    validate_timeout_seconds: int = 900
    train_timeout_seconds: int = 6 * 3600
    evaluate_timeout_seconds: int = 1800
    bedrock_poll_seconds: int = 60


@dataclass(frozen=True)
class CreateJob:
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    hyperparameters: Mapping[str, Any] | None = None
    metadata: Mapping[str, str] | None = None


class JobFailure(Exception):
    """A step cannot succeed (bad data): the job fails with this error, without retries."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


def event(clock: Clock, message: str, **kwargs: Any) -> JobEvent:
    return JobEvent(new_event_id(), clock.now(), message, **kwargs)


def webhook_event(event_type: str, org_id: str, job_id: str, created: str) -> dict[str, Any]:
    """The message that asks the webhook worker to deliver a job's event to its endpoints."""
    return {
        "kind": "event",
        "type": event_type,
        "org_id": org_id,
        "created": created,
        "event_id": f"evt_{job_id}_{event_type.rsplit('.', 1)[-1]}",
        "data": {"id": job_id, "object": "fine_tuning.job"},
    }


class FineTuningService:
    def __init__(
        self,
        *,
        jobs: JobStore,
        files: FileService,
        workflow: Workflow,
        registry: Registry,
        trainers: Mapping[str, Trainer],
        webhook_queue: MessageQueue,
        clock: Clock,
        settings: JobSettings,
    ) -> None:
        self._jobs = jobs
        self._files = files
        self._workflow = workflow
        self._registry = registry
        self._trainers = trainers
        self._webhooks = webhook_queue
        self._clock = clock
        self.settings = settings

    # --- create -------------------------------------------------------------------------

    def create(self, org_id: str, request: CreateJob) -> FineTuningJob:
        base = self._base_model(request.model)
        formats = self._formats(base)
        training = self._training_file(org_id, request.training_file, "training_file", formats)
        validation = None
        if request.validation_file is not None:
            validation = self._training_file(
                org_id, request.validation_file, "validation_file", formats
            )
        if training.lines < MIN_TRAINING_EXAMPLES:
            raise InvalidRequest(
                f"The training file has {training.lines} examples; fine-tuning needs at least "
                f"{MIN_TRAINING_EXAMPLES}.",
                code="invalid_value",
                param="training_file",
            )
        hyperparameters = parse_hyperparameters(request.hyperparameters)
        suffix = validate_suffix(request.suffix)
        metadata = validate_metadata(request.metadata)
        now = self._clock.now()
        job_id = new_job_id()
        job = FineTuningJob(
            id=job_id,
            org_id=org_id,
            model=base.id,
            training_file=training.id,
            validation_file=validation.id if validation else None,
            fine_tuned_model_name=fine_tuned_model_id(base.id, org_id, suffix, job_id),
            provider=BEDROCK if base.provider == BEDROCK else "local",
            created_at=now,
            expires_at=now + self.settings.max_job_seconds + self.settings.retention_seconds,
            suffix=suffix,
            seed=request.seed if request.seed is not None else secrets.randbelow(2**31),
            hyperparameters=hyperparameters,
            metadata=metadata,
        )
        self._jobs.create_job(job)
        self._event(job, f"Created fine-tuning job: {job.id}")
        self._event(job, f"Validating training file: {training.id}")
        try:
            execution = self._workflow.start(job.id, self.execution_input(job, base, training))
        except GantryError:
            self._fail(job, JobError("workflow_unavailable", "The job could not be started."))
            raise
        except Exception as exc:
            self._fail(job, JobError("workflow_unavailable", "The job could not be started."))
            raise ServiceUnavailable(
                "Fine-tuning jobs cannot be started right now; retry shortly.",
                details={"subsystem": "queue"},
                retry_after=5,
            ) from exc
        self._jobs.set_fields(job.id, {"execution_id": execution})
        return replace(job, execution_id=execution)

    def execution_input(
        self, job: FineTuningJob, base: ModelSpec, training: FileObject
    ) -> dict[str, Any]:
        s = self.settings
        payload: dict[str, Any] = {
            "job_id": job.id,
            "org_id": job.org_id,
            "provider": job.provider,
            "fine_tuned_model": job.fine_tuned_model_name,
            "base_model": base.id,
            "expires_at": str(int(job.expires_at)),
            "timeouts": {
                "heartbeat": s.heartbeat_seconds,
                "validate": s.validate_timeout_seconds,
                "train": s.train_timeout_seconds,
                "evaluate": s.evaluate_timeout_seconds,
                "bedrock_poll": s.bedrock_poll_seconds,
            },
            "bedrock": {},
        }
        if job.provider == BEDROCK:
            hyper = job.hyperparameters
            rate = BEDROCK_BASE_LEARNING_RATE * hyper.learning_rate_multiplier
            payload["bedrock"] = {
                "job_name": job.id,
                "custom_model_name": f"gantry-{job.id}",
                "base_model": base.provider_model_id,
                "training_uri": self._files.uri(training),
                "output_uri": self._files.uri(training).rsplit("/files/", 1)[0]
                + f"/fine-tuning/{job.id}/",
                "hyperparameters": {
                    "epochCount": str(hyper.n_epochs),
                    "batchSize": str(hyper.batch_size),
                    "learningRate": f"{rate:g}",
                },
            }
        return payload

    def _base_model(self, model_id: str) -> ModelSpec:
        spec = self._registry.find(model_id)
        if spec is None or spec.owner_org is not None:
            raise NotFound(
                f"The model '{model_id}' does not exist or cannot be fine-tuned here. "
                f"Fine-tunable models: {', '.join(self.fine_tunable()) or 'none'}.",
                code="model_not_found",
                param="model",
            )
        return spec

    def fine_tunable(self) -> list[str]:
        return [m.id for m in self._registry.all() if m.owner_org is None and self._can_train(m)]

    def _can_train(self, spec: ModelSpec) -> bool:
        trainer = self._trainers.get(spec.provider)
        return trainer is not None and bool(trainer.example_formats(spec))

    def _formats(self, base: ModelSpec) -> tuple[str, ...]:
        trainer = self._trainers.get(base.provider)
        formats = trainer.example_formats(base) if trainer is not None else ()
        if not formats:
            raise InvalidRequest(
                f"The model '{base.id}' cannot be fine-tuned. Fine-tunable models: "
                f"{', '.join(self.fine_tunable()) or 'none'}.",
                code="model_not_supported",
                param="model",
            )
        return formats

    def _training_file(
        self, org_id: str, file_id: str, param: str, formats: Sequence[str]
    ) -> FileObject:
        file = self._files.get(org_id, file_id, param=param)
        if file.purpose != FINE_TUNE:
            raise InvalidRequest(
                f"The file '{file_id}' was uploaded with purpose '{file.purpose}'; a {param} "
                f"must be uploaded with purpose '{FINE_TUNE}'.",
                code="invalid_file_purpose",
                param=param,
            )
        if file.example_format not in formats:
            raise InvalidRequest(
                f"The file '{file_id}' holds {file.example_format} examples; this model learns "
                f"from {' or '.join(formats)} examples.",
                code="invalid_file_format",
                param=param,
            )
        return file

    # --- read ---------------------------------------------------------------------------

    def get(self, org_id: str, job_id: str) -> FineTuningJob:
        job = self._jobs.get_job(job_id) if is_job_id(job_id) else None
        if (
            job is None
            or job.org_id != org_id
            or expired(job, self.settings.retention_seconds, self._clock.now())
        ):
            raise NotFound(f"No fine-tuning job with id '{job_id}'.", code="not_found")
        return job

    def list_jobs(
        self, org_id: str, limit: int, after: str | None
    ) -> tuple[list[FineTuningJob], bool]:
        now = self._clock.now()
        jobs, more = self._jobs.list_jobs(org_id, limit, after)
        live = [j for j in jobs if not expired(j, self.settings.retention_seconds, now)]
        return live, more

    def events(
        self, org_id: str, job_id: str, limit: int, after: str | None
    ) -> tuple[list[JobEvent], bool]:
        self.get(org_id, job_id)
        return self._jobs.list_events(job_id, limit, after)

    def results(self, org_id: str, job_id: str) -> dict[str, Any]:
        job = self.get(org_id, job_id)
        return {
            "object": "fine_tuning.job.results",
            "id": job.id,
            "status": job.status,
            "fine_tuned_model": job.fine_tuned_model,
            "trained_tokens": job.trained_tokens,
            "result_files": list(job.result_files),
            "metrics": job.metrics,
            "error": job.error.as_dict() if job.error else None,
        }

    # --- cancel -------------------------------------------------------------------------

    def cancel(self, org_id: str, job_id: str) -> FineTuningJob:
        job = self.get(org_id, job_id)
        now = self._clock.now()
        if not job.active or not self._jobs.transition(
            job.id, ACTIVE, CANCELLED, {"finished_at": now}
        ):
            current = self.get(org_id, job_id)
            raise InvalidRequest(
                f"The job is already {current.status}; only jobs that are "
                f"{', '.join(ACTIVE)} can be cancelled.",
                code="job_not_cancellable",
                param="fine_tuning_job_id",
            )
        self._event(job, "Fine-tuning job cancelled")
        # A Bedrock job's execution keeps running: its next poll sees the job cancelled and
        # stops Bedrock's customization job, which stopping the execution would leave running.
        if job.execution_id and job.provider != BEDROCK:
            try:
                self._workflow.stop(job.execution_id, "Job.Cancelled", "cancelled by the user")
            except Exception:
                # The job is cancelled already: the workflow's final write is conditional on
                # an active job, so a run we could not stop ends without a model.
                logger.warning("could not stop the workflow of job %s", job.id, exc_info=True)
        created = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")
        self._notify(webhook_event("fine_tuning.job.cancelled", job.org_id, job.id, created))
        return job.with_status(CANCELLED, finished_at=now)

    def _event(self, job: FineTuningJob, message: str, **kwargs: Any) -> None:
        self._jobs.add_event(job.id, event(self._clock, message, **kwargs), job.expires_at)

    def _fail(self, job: FineTuningJob, error: JobError) -> None:
        fields = {"finished_at": self._clock.now(), "error": error}
        self._jobs.transition(job.id, ACTIVE, FAILED, fields)
        self._event(job, error.message, level="error")

    def _notify(self, message: Mapping[str, Any]) -> None:
        try:
            self._webhooks.send(message)
        except Exception:
            logger.error("could not queue webhook event %s", message.get("event_id"), exc_info=True)


# --- the workers' steps -----------------------------------------------------------------


def split_examples(
    items: Sequence[Example], seed: int, validation: Sequence[Example] | None
) -> tuple[list[Example], list[Example]]:
    """(training, held out): the validation file if there is one, else a seeded 20% split."""
    if validation:
        return list(items), list(validation)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(items) * HELD_OUT_SHARE)) if len(items) >= 5 else 0
    held_ids = set(order[:held])
    train = [e for i, e in enumerate(items) if i not in held_ids]
    return train, [items[i] for i in sorted(held_ids)]


class FineTuningWorker:
    """Runs one step of a job for the state machine and answers its task token.

    `keepalive` is called between epochs: it heartbeats the task (and extends the queue
    message) and returns False once the task no longer waits (cancelled, timed out). When
    the invocation would end before another epoch (`seconds_left`), training stops after
    the epoch it finished and continues in a new message with the same task token.
    Transient failures raise, so the queue delivers the message again; bad data fails the
    job through the token with a JSON cause the workflow records as the job's error.
    """

    def __init__(
        self,
        *,
        jobs: JobStore,
        files: FileService,
        blobs: BlobStore,
        registry: Registry,
        trainers: Mapping[str, Trainer],
        callbacks: TaskCallbacks,
        clock: Clock,
        queue: MessageQueue,
    ) -> None:
        self._jobs = jobs
        self._files = files
        self._blobs = blobs
        self._registry = registry
        self._trainers = trainers
        self._callbacks = callbacks
        self._clock = clock
        self._queue = queue

    def handle(
        self,
        message: Mapping[str, Any],
        keepalive: Callable[[], bool],
        seconds_left: Callable[[], float] | None = None,
    ) -> None:
        step = str(message.get("step"))
        token = str(message["task_token"])
        job = self._jobs.get_job(str(message.get("job_id")))
        if job is None or not job.active:
            self._callbacks.fail(token, "Job.Inactive", json.dumps({"message": "not active"}))
            return
        try:
            if step == "validate":
                output: dict[str, Any] | None = self.validate(job)
            elif step == "train":
                output = self.train(job, self._alive(job.id, keepalive), seconds_left, message)
            elif step == "evaluate":
                output = self.evaluate(job)
            else:
                raise ValueError(f"unknown step {step!r}")
        except JobFailure as failure:
            # The job keeps the worker's own error; the workflow then marks it failed.
            self._jobs.set_fields(job.id, {"error": failure.error})
            self._add_event(job, failure.error.message, level="error")
            cause = json.dumps(failure.error.as_dict())
            self._callbacks.fail(token, "Job.Failed", cause)
            return
        if output is None:
            # Cancelled mid-step: the execution is being stopped; say so in case it waits.
            self._callbacks.fail(token, "Job.Cancelled", json.dumps({"message": "cancelled"}))
        elif output is not CONTINUED:
            self._callbacks.succeed(token, output)

    def _alive(self, job_id: str, keepalive: Callable[[], bool]) -> Callable[[], bool]:
        return lambda: keepalive() and self._still_active(job_id)

    def _still_active(self, job_id: str) -> bool:
        job = self._jobs.get_job(job_id)
        return job is not None and job.active

    def _trainer(self, job: FineTuningJob) -> tuple[ModelSpec, Trainer]:
        base = self._registry.get(job.model)
        trainer = self._trainers.get(base.provider)
        if trainer is None:
            raise JobFailure(JobError("model_not_supported", f"'{job.model}' cannot be trained."))
        return base, trainer

    def _examples(self, job: FineTuningJob, file_id: str, param: str) -> list[Example]:
        found = self._files.read(file_id)
        if found is None or found[0].org_id != job.org_id:
            raise JobFailure(
                JobError("file_not_found", f"The file '{file_id}' no longer exists.", param)
            )
        return examples(found[1])

    def _data(self, job: FineTuningJob) -> tuple[list[Example], list[Example]]:
        training = self._examples(job, job.training_file, "training_file")
        validation = None
        if job.validation_file:
            validation = self._examples(job, job.validation_file, "validation_file")
        return split_examples(training, job.seed, validation)

    def validate(self, job: FineTuningJob) -> dict[str, Any]:
        self._trainer(job)
        train, held_out = self._data(job)
        if len(train) < MIN_TRAINING_EXAMPLES // 2:
            raise JobFailure(
                JobError(
                    "invalid_training_file",
                    f"Only {len(train)} examples are left for training.",
                    "training_file",
                )
            )
        self._jobs.transition(job.id, (VALIDATING,), QUEUED, {})
        self._add_event(job, "Files validated, moving job to queued state")
        return {"examples": len(train), "held_out": len(held_out)}

    def train(
        self,
        job: FineTuningJob,
        keepalive: Callable[[], bool],
        seconds_left: Callable[[], float] | None = None,
        message: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        base, trainer = self._trainer(job)
        started = job.started_at or self._clock.now()
        if not self._jobs.transition(job.id, (QUEUED, RUNNING), RUNNING, {"started_at": started}):
            return None
        first = int((message or {}).get("from_epoch") or 1)
        if first == 1:
            self._add_event(job, "Fine-tuning job started")
        elif not keepalive():  # a heartbeat before the first epoch of a continuation
            return None
        train, _ = self._data(job)
        epochs = job.hyperparameters.n_epochs
        began = last = self._clock.monotonic()
        resume_at: int | None = None

        def progress(epoch: int, metrics: Mapping[str, float]) -> bool:
            nonlocal last, resume_at
            now = self._clock.monotonic()
            took, last = now - last, now
            per_epoch = (now - began) / (epoch - first + 1)
            finish = self._clock.now() + per_epoch * (epochs - epoch)
            self._jobs.set_fields(job.id, {"estimated_finish": finish})
            self._add_event(
                job,
                f"Step {epoch}/{epochs}: training loss={metrics.get('train_loss', 0.0):.4f}",
                type="metrics",
                data={"step": epoch, "total_steps": epochs, **metrics},
            )
            if not keepalive():
                return False
            if (
                epoch < epochs
                and seconds_left is not None
                and seconds_left() < 2 * took + CONTINUE_MARGIN_SECONDS
            ):
                resume_at = epoch + 1
                return False
            return True

        rate = job.hyperparameters.learning_rate_multiplier
        trained = trainer.train(base, train, epochs, rate, progress, first_epoch=first)
        if trained is None and resume_at is not None:
            # This invocation would end before the next epoch does: go on in a new one.
            self._queue.send({**(message or {}), "from_epoch": resume_at})
            return CONTINUED
        if trained is None:
            return None
        key = f"fine-tuning/{job.id}/model.json"
        self._blobs.put(key, trained.artifact, "application/json")
        self._jobs.set_fields(
            job.id, {"artifact_key": key, "trained_tokens": trained.trained_tokens}
        )
        self._add_event(job, "Training finished; evaluating the model")
        return {
            "trained_tokens": trained.trained_tokens,
            "artifact_key": key,
            "metrics": dict(trained.metrics),
        }

    def evaluate(self, job: FineTuningJob) -> dict[str, Any]:
        base, trainer = self._trainer(job)
        current = self._jobs.get_job(job.id) or job
        if current.artifact_key is None:
            raise JobFailure(JobError("artifact_missing", "The trained model was not saved."))
        artifact = self._blobs.get(current.artifact_key)
        _, held_out = self._data(job)
        metrics = trainer.evaluate(base, artifact, held_out)
        lines = ["metric,value", *(f"{k},{v:.6f}" for k, v in sorted(metrics.items()))]
        result = FileObject(
            id=f"file-{secrets.token_hex(12)}",
            org_id=job.org_id,
            purpose=FINE_TUNE_RESULTS,
            filename=f"{job.id}-results.csv",
            bytes=0,
            created_at=self._clock.now(),
        )
        data = ("\n".join(lines) + "\n").encode()
        self._files.store(replace(result, bytes=len(data)), data)
        summary = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        self._add_event(job, f"Evaluation on {len(held_out)} held-out examples: {summary}")
        return {
            "provider_model_id": f"ft:{job.id}",
            "artifact_key": current.artifact_key,
            "trained_tokens": current.trained_tokens or 0,
            "result_files": [result.id],
            "metrics": metrics,
        }

    def _add_event(self, job: FineTuningJob, message: str, **kwargs: Any) -> None:
        self._jobs.add_event(job.id, event(self._clock, message, **kwargs), job.expires_at)


# --- serving trained models -------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredModel:
    """A trained model as the workflow registered it."""

    model_id: str
    org_id: str
    base: str
    provider_model_id: str
    artifact_key: str | None
    created_at: float


class ModelRegistrations:
    """Reads the model registrations the workflow writes (and the job it came from)."""

    def __init__(self, jobs: JobStore, find: Callable[[str], RegisteredModel | None]) -> None:
        self._jobs = jobs
        self._find = find

    def lookup(self, model_id: str) -> RegisteredModel | None:
        parsed = parse_fine_tuned_model(model_id)
        if parsed is None:
            return None
        found = self._find(model_id)
        if found is not None:
            return found
        # The job records success just before the registration item is written.
        job = self._jobs.get_job(parsed.job_id)
        if job is None or job.status != SUCCEEDED or job.fine_tuned_model != model_id:
            return None
        return RegisteredModel(
            model_id,
            job.org_id,
            job.model,
            job.provider_model_id or f"ft:{job.id}",
            job.artifact_key,
            job.finished_at or job.created_at,
        )


class FineTunedModels:
    """Turns registered fine-tuned models into servable `ModelSpec`s, owned by their org."""

    def __init__(
        self,
        registrations: ModelRegistrations,
        list_registered: Callable[[str], list[RegisteredModel]],
        registry: Registry,
        blobs: BlobStore,
        trainers: Mapping[str, Trainer],
    ) -> None:
        self._registrations = registrations
        self._list = list_registered
        self._registry = registry
        self._blobs = blobs
        self._trainers = trainers

    def spec(self, model: RegisteredModel) -> ModelSpec | None:
        base = self._registry.find(model.base)
        if base is None:
            return None
        return replace(
            base,
            id=model.model_id,
            provider_model_id=model.provider_model_id,
            owner_org=model.org_id,
            owned_by=model.org_id,
            created=int(model.created_at),
            description=f"Fine-tuned from {base.id}.",
            deprecation_date=None,
            sunset_date=None,
            replacement=None,
        )

    def load(self, model_id: str) -> ModelSpec | None:
        """The spec of a fine-tuned model, its weights installed in this process."""
        model = self._registrations.lookup(model_id)
        if model is None:
            return None
        spec = self.spec(model)
        if spec is None:
            return None
        trainer = self._trainers.get(spec.provider)
        if trainer is not None and model.artifact_key:
            base = self._registry.get(model.base)
            trainer.install(spec.provider_model_id, base, self._blobs.get(model.artifact_key))
        return spec

    def list_for(self, org_id: str) -> list[ModelSpec]:
        specs = [self.spec(m) for m in self._list(org_id)]
        return [s for s in specs if s is not None]
