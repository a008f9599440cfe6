"""Batches: creating, reading and cancelling them (the API side), and the steps the batch
workers run for the state machine (`infra/statemachines/batch.asl.json`).

The state machine owns the order of the steps, the Map's bounded concurrency, timeouts and
retries, and the failure record. Workers run each line through the same API code an
interactive request takes (`LineRunner`), as the key that created the batch, under a
request id fixed per line, so the usage layer bills a line once even if it runs again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gantry.domain.batches import (
    CANCELLABLE,
    CANCELLED,
    CANCELLED_LINE,
    CANCELLING,
    COMPLETED,
    EXPIRED,
    EXPIRED_LINE,
    FAILED,
    FAILED_LINE,
    FINALIZING,
    IN_PROGRESS,
    RUNNING,
    TERMINAL,
    VALIDATING,
    Batch,
    BatchLine,
    Chunk,
    LineError,
    LineResult,
    RequestCounts,
    check_lines,
    chunks,
    final_status,
    is_batch_id,
    new_batch_id,
    output_line,
    read_chunk,
    read_lines,
    request_id,
    unrun_line,
    validate_endpoint,
    window_seconds,
    write_lines,
)
from gantry.domain.errors import GantryError, InvalidRequest, NotFound, ServiceUnavailable
from gantry.domain.file_service import FileService
from gantry.domain.files import BATCH, BATCH_OUTPUT, FileObject
from gantry.domain.keys import Principal
from gantry.domain.metadata import validate_metadata
from gantry.job_ports import (
    CONTINUED,
    BatchStore,
    BlobStore,
    LineRunner,
    MessageQueue,
    TaskCallbacks,
    Workflow,
)
from gantry.ports import Clock

logger = logging.getLogger("gantry.batches")

STATUS_CHECK_SECONDS = 2.0  # how stale a worker's view of cancellation may be
KEEPALIVE_SECONDS = 10.0  # heartbeat at most this often while lines run
MAX_SERVER_ERROR_ATTEMPTS = 3
MAX_RETRY_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class BatchSettings:
    retention_seconds: float = 30 * 86_400
    chunk_size: int = 50
    max_concurrency: int = 4
    # The longest one line may run (the worker's request budget): a chunk continues in a
    # new message while its process still has this much time, and a little more, left.
    line_seconds: float = 240.0
    # How long after its window a batch may still be finalizing (the state machine's
    # bound is the window plus this).
    finalize_seconds: float = 2 * 3600

    @property
    def continue_margin_seconds(self) -> float:
        return self.line_seconds + 30.0


@dataclass(frozen=True)
class CreateBatch:
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: Mapping[str, str] | None = None


class BatchFailure(Exception):
    """The batch cannot run (its input is unusable): it fails with these errors."""

    def __init__(self, errors: list[LineError]) -> None:
        super().__init__(errors[0].message if errors else "batch failed")
        self.errors = errors


def chunk_key(batch_id: str, index: int) -> str:
    """Where a chunk's worker stores the results of its lines."""
    return f"batches/{batch_id}/chunks/{index:06d}.json"


def unrun_key(batch_id: str, index: int) -> str:
    """Where Finalize stores a chunk that never ran as failed lines (apart from what a late
    worker of that chunk may write: the chunk's record says which of the two counts)."""
    return f"batches/{batch_id}/chunks/{index:06d}.unrun.json"


def input_key(batch_id: str, index: int) -> str:
    """A chunk's own copy of its requests, written by the validate step."""
    return f"batches/{batch_id}/chunks/{index:06d}.input.jsonl"


def ended(status: str) -> dict[str, Any]:
    """The finalize step's answer: the status and the event to announce it."""
    return {"status": status, "event": f"batch.{status}"}


ENDED = (COMPLETED, EXPIRED, CANCELLED, FAILED)
# A line still refused for rate limits when the window closes never ran: it expired.
EXPIRED_RESULT = LineResult(0, "", {})


def progress_key(batch_id: str, index: int) -> str:
    """Where a chunk that ran out of time keeps the results of the lines it ran."""
    return f"batches/{batch_id}/chunks/{index:06d}.progress.json"


def result_file_id(batch_id: str, kind: str) -> str:
    """Output and error files have ids fixed per batch, so a finalize step that runs again
    rewrites the same files."""
    return f"file-{batch_id.removeprefix('batch_')}{kind}"


class BatchService:
    def __init__(
        self,
        *,
        batches: BatchStore,
        files: FileService,
        workflow: Workflow,
        clock: Clock,
        settings: BatchSettings,
    ) -> None:
        self._batches = batches
        self._files = files
        self._workflow = workflow
        self._clock = clock
        self.settings = settings

    def create(self, principal: Principal, request: CreateBatch) -> Batch:
        endpoint = validate_endpoint(request.endpoint)
        window = window_seconds(request.completion_window)
        metadata = validate_metadata(request.metadata)
        file = self._files.get(principal.org_id, request.input_file_id, param="input_file_id")
        if file.purpose != BATCH:
            raise InvalidRequest(
                f"The file '{file.id}' was uploaded with purpose '{file.purpose}'; a batch's "
                f"input_file_id must be uploaded with purpose '{BATCH}'.",
                code="invalid_file_purpose",
                param="input_file_id",
            )
        now = self._clock.now()
        batch = Batch(
            id=new_batch_id(),
            org_id=principal.org_id,
            key_id=principal.key_id,
            endpoint=endpoint,
            input_file_id=file.id,
            completion_window=request.completion_window,
            created_at=now,
            expires_at=now + window,
            retain_until=now + window + self.settings.retention_seconds,
            metadata=metadata,
            request_counts=RequestCounts(total=file.lines),
        )
        self._batches.create_batch(batch)
        try:
            execution = self._workflow.start(batch.id, self.execution_input(batch))
        except Exception as exc:
            error = LineError("workflow_unavailable", "The batch could not be started.")
            self._batches.transition(
                batch.id, RUNNING, FAILED, {"failed_at": self._clock.now(), "errors": [error]}
            )
            if isinstance(exc, GantryError):
                raise
            raise ServiceUnavailable(
                "Batches cannot be started right now; retry shortly.",
                details={"subsystem": "queue"},
                retry_after=5,
            ) from exc
        self._batches.set_fields(batch.id, {"execution_id": execution})
        return replace(batch, execution_id=execution)

    def execution_input(self, batch: Batch) -> dict[str, Any]:
        # A step's message may wait on the shared queue behind other batches' chunks, so
        # each step may take until the window closes (a worker that dies mid-step is
        # replaced by the queue's redelivery, not by a timeout).
        window = max(1, int(batch.expires_at - batch.created_at))
        return {
            "batch_id": batch.id,
            "org_id": batch.org_id,
            "max_concurrency": self.settings.max_concurrency,
            "timeouts": {"validate": window, "chunk": window, "finalize": window},
        }

    def get(self, org_id: str, batch_id: str) -> Batch:
        batch = self._batches.get_batch(batch_id) if is_batch_id(batch_id) else None
        if batch is None or batch.org_id != org_id or self._clock.now() >= batch.retain_until:
            raise NotFound(f"No batch with id '{batch_id}'.", code="not_found", param="batch_id")
        return self._unstuck(batch)

    def list_batches(self, org_id: str, limit: int, after: str | None) -> tuple[list[Batch], bool]:
        now = self._clock.now()
        found, more = self._batches.list_batches(org_id, limit, after)
        return [self._unstuck(b) for b in found if now < b.retain_until], more

    def _unstuck(self, batch: Batch) -> Batch:
        """A batch still running past its workflow's bound (the window plus the time to
        finalize) lost its execution (stopped, timed out, or failed where nothing could
        record it): it is failed when next read, so no client polls it forever."""
        now = self._clock.now()
        if not batch.running or now < batch.expires_at + self.settings.finalize_seconds:
            return batch
        error = LineError(
            "batch_timed_out",
            "The batch's workflow ended without finishing it; its results were not written.",
        )
        fields = {"failed_at": now, "errors": [error]}
        if self._batches.transition(batch.id, RUNNING, FAILED, fields):
            return replace(batch.with_status(FAILED, now), errors=(error,))
        return self._batches.get_batch(batch.id) or batch

    def cancel(self, org_id: str, batch_id: str) -> Batch:
        """Stop running new lines: the workers finish the ones in flight, and the batch ends
        `cancelled` with the results it has (unrun lines go to the error file)."""
        batch = self.get(org_id, batch_id)
        now = self._clock.now()
        if batch.status == CANCELLING:
            return batch
        if not self._batches.transition(batch.id, CANCELLABLE, CANCELLING, {"cancelling_at": now}):
            current = self.get(org_id, batch_id)
            if current.status == CANCELLING:
                return current
            raise InvalidRequest(
                f"The batch is already {current.status}; only batches that are "
                f"{' or '.join(CANCELLABLE)} can be cancelled.",
                code="batch_not_cancellable",
                param="batch_id",
            )
        return batch.with_status(CANCELLING, now)


# --- the workers' steps -----------------------------------------------------------------


class BatchWorker:
    """Runs one step of a batch for the state machine and answers its task token.

    `keepalive` heartbeats the task (and extends the queue message); it returns False once
    the task no longer waits (the execution stopped or timed out). Transient failures
    raise, so the queue delivers the message again.
    """

    def __init__(
        self,
        *,
        batches: BatchStore,
        files: FileService,
        blobs: BlobStore,
        runner: LineRunner,
        callbacks: TaskCallbacks,
        queue: MessageQueue,
        clock: Clock,
        settings: BatchSettings,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._batches = batches
        self._files = files
        self._blobs = blobs
        self._runner = runner
        self._queue = queue
        self._callbacks = callbacks
        self._clock = clock
        self._settings = settings
        self._sleep = sleep

    def handle(
        self,
        message: Mapping[str, Any],
        keepalive: Callable[[], bool],
        seconds_left: Callable[[], float] | None = None,
    ) -> None:
        step = str(message.get("step"))
        token = str(message["task_token"])
        batch = self._batches.get_batch(str(message.get("batch_id")))
        if batch is not None and step == "finalize" and batch.status in ENDED:
            # Finalized already (its answer was lost): answer again, so the event goes out.
            self._callbacks.succeed(token, ended(batch.status))
            return
        if batch is None or batch.status in TERMINAL:
            self._callbacks.fail(token, "Batch.Inactive", json.dumps({"message": "not running"}))
            return
        try:
            if step == "validate":
                output: dict[str, Any] | None = self.validate(batch)
            elif step == "run":
                chunk = Chunk.from_dict(message["chunk"])
                output = self.run(batch, chunk, keepalive, seconds_left, message)
            elif step == "finalize":
                run = message.get("run")
                failure = run.get("Error") if isinstance(run, Mapping) else None
                output = self.finalize(batch, str(failure) if failure else None)
            else:
                raise ValueError(f"unknown step {step!r}")
        except BatchFailure as failure:
            # The batch keeps the worker's errors; the workflow then marks it failed.
            first = failure.errors[0] if failure.errors else LineError("batch_failed", "failed")
            self._batches.set_fields(batch.id, {"errors": failure.errors})
            self._callbacks.fail(token, "Batch.Failed", json.dumps(first.as_dict()))
            return
        if output is None:
            self._callbacks.fail(token, "Batch.Inactive", json.dumps({"message": "stopped"}))
        elif output is not CONTINUED:
            self._callbacks.succeed(token, output)

    def _lines(self, batch: Batch) -> list[BatchLine]:
        found = self._files.read(batch.input_file_id)
        if found is None or found[0].org_id != batch.org_id:
            raise BatchFailure(
                [
                    LineError(
                        "file_not_found",
                        f"The input file '{batch.input_file_id}' no longer exists.",
                        "input_file_id",
                    )
                ]
            )
        return read_lines(found[1])

    def validate(self, batch: Batch) -> dict[str, Any]:
        lines = self._lines(batch)
        errors = check_lines(lines, batch.endpoint)
        if errors:
            raise BatchFailure(errors)
        plan = chunks(len(lines), self._settings.chunk_size)
        for chunk in plan:  # each chunk reads its own lines, even if the file is deleted
            data = write_lines(lines[chunk.start : chunk.end])
            self._blobs.put(input_key(batch.id, chunk.index), data, "application/jsonl")
        fields = {"request_counts": RequestCounts(total=len(lines)), "chunk_count": len(plan)}
        now = self._clock.now()
        if not self._batches.transition(
            batch.id, (VALIDATING,), IN_PROGRESS, {**fields, "in_progress_at": now}
        ):
            # Cancelled meanwhile: the chunks still run, writing every line as cancelled.
            self._batches.set_fields(batch.id, fields)
        return {"chunks": [c.as_dict() for c in plan]}

    def run(
        self,
        batch: Batch,
        chunk: Chunk,
        keepalive: Callable[[], bool],
        seconds_left: Callable[[], float] | None = None,
        message: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        if self._batches.chunk_results(batch.id, chunk.index) is not None:
            return {}
        progress = _ChunkProgress.load(self._blobs, progress_key(batch.id, chunk.index))
        lines = self._chunk_lines(batch, chunk.index)[progress.done :]
        status = _StatusView(self._batches, batch, self._clock)
        beat = _Keepalive(keepalive, self._clock)
        for ran, line in enumerate(lines):
            if not beat():
                return None
            # At least one line per message, so a chunk always moves forward.
            if (
                ran
                and seconds_left is not None
                and seconds_left() < self._settings.continue_margin_seconds
            ):
                return self._continue(batch, chunk, progress, message)
            rid = request_id(batch.id, line.line)
            reason = None
            now_status = status.current()
            if now_status == FINALIZING:
                # Finalize only starts once the Map is over: this chunk's Map failed and
                # its lines are written as failed, so running them would bill for nothing.
                return None
            if now_status == CANCELLING:
                reason = CANCELLED_LINE
            elif self._clock.now() >= batch.expires_at:
                reason = EXPIRED_LINE
            if reason is not None:
                progress.unrun(unrun_line(line, rid, reason))
            else:
                result = self._run_line(batch, line, rid, beat, seconds_left)
                if result is None:  # rate limits outlasted this invocation
                    return self._continue(batch, chunk, progress, message)
                if result is EXPIRED_RESULT:  # still waiting when the window closed
                    progress.unrun(unrun_line(line, rid, EXPIRED_LINE))
                else:
                    progress.ran(output_line(line, result), result.ok)
        key = chunk_key(batch.id, chunk.index)
        self._blobs.put(key, progress.results(), "application/json")
        self._batches.record_chunk(
            batch.id, chunk.index, progress.counts, progress.unrun_count, key
        )
        return {}

    def _continue(
        self,
        batch: Batch,
        chunk: Chunk,
        progress: _ChunkProgress,
        message: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        progress.save(self._blobs, progress_key(batch.id, chunk.index))
        self._queue.send({**(message or {}), "resumed_at": progress.done})
        return CONTINUED

    def _run_line(
        self,
        batch: Batch,
        line: BatchLine,
        rid: str,
        beat: _Keepalive,
        seconds_left: Callable[[], float] | None = None,
    ) -> LineResult | None:
        """Run a line; wait out rate limits and retry transient server errors while the
        completion window lasts (batches yield to interactive traffic). None when a wait
        would outlast the process: the line runs again in the chunk's continuation."""
        server_errors = 0
        while True:
            result = self._runner.run(batch.key_id, rid, line.url, line.body)
            if result.ok:
                return result
            error = result.body.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            retryable = isinstance(error, dict) and bool(error.get("retryable"))
            if result.status_code == 429 and code == "rate_limit_exceeded":
                wait = result.retry_after or 1.0
            elif result.status_code >= 500 and retryable:
                server_errors += 1
                if server_errors >= MAX_SERVER_ERROR_ATTEMPTS:
                    return result
                wait = result.retry_after or 2.0**server_errors
            else:
                return result
            wait = min(wait, MAX_RETRY_WAIT_SECONDS)
            if self._clock.now() + wait >= batch.expires_at:
                return EXPIRED_RESULT if result.status_code == 429 else result
            if (
                seconds_left is not None
                and seconds_left() - wait < self._settings.continue_margin_seconds
            ):
                return None
            if not beat.wait(wait, self._sleep):
                return result

    def finalize(self, batch: Batch, run_failure: str | None = None) -> dict[str, Any]:
        """Write the output and error files from the chunks' results and end the batch.
        After a failed run (`run_failure`, the Map's error), chunks that recorded nothing
        are written as failed lines, and the batch ends `failed` with the results it has."""
        now = self._clock.now()
        self._batches.transition(batch.id, (IN_PROGRESS,), FINALIZING, {"finalizing_at": now})
        current = self._batches.get_batch(batch.id) or batch
        outputs = self._files.line_writer(self._result_file(current, "output"))
        errors = self._files.line_writer(self._result_file(current, "errors"))
        try:
            for index in range(current.chunk_count):
                # After a successful run, every chunk recorded its results before the Map
                # let this step start; after a failed one, some may never have.
                results = self._batches.chunk_results(batch.id, index)
                if results is None and run_failure is not None:
                    part = self._never_ran(current, index)
                else:
                    part = json.loads(self._blobs.get(results or chunk_key(batch.id, index)))
                for row in part["output"]:
                    outputs.write(json.dumps(row, separators=(",", ":")))
                for row in part["errors"]:
                    errors.write(json.dumps(row, separators=(",", ":")))
            output_file, error_file = outputs.finish(), errors.finish()
        except BaseException:
            outputs.abort()
            errors.abort()
            raise
        fields: dict[str, Any] = {}
        if output_file is not None:
            fields["output_file_id"] = output_file.id
        if error_file is not None:
            fields["error_file_id"] = error_file.id
        unrun = self._batches.unrun_lines(batch.id)
        status = final_status(current, unrun, run_failed=run_failure is not None)
        fields[f"{status}_at"] = self._clock.now()
        if status == FAILED:
            message = f"The batch stopped before all its requests ran ({run_failure})."
            fields["errors"] = [LineError("batch_failed", message)]
        if not self._batches.transition(batch.id, (FINALIZING, CANCELLING), status, fields):
            ended_now = self._batches.get_batch(batch.id)
            status = ended_now.status if ended_now is not None else status
        return ended(status)

    def _never_ran(self, batch: Batch, index: int) -> dict[str, Any]:
        """A chunk the failed run never recorded: its lines go to the error file, counted
        as failed once. They are stored first, like a chunk that ran, so a Finalize that
        fails after this and runs again reads them back. Whichever records the chunk first,
        this or a worker still running it, is what the files and the counts both show."""
        lines = self._chunk_lines(batch, index)
        rows = [unrun_line(line, request_id(batch.id, line.line), FAILED_LINE) for line in lines]
        part: dict[str, Any] = {"output": [], "errors": rows}
        key = unrun_key(batch.id, index)
        self._blobs.put(key, json.dumps(part, separators=(",", ":")).encode(), "application/json")
        if self._batches.record_chunk(batch.id, index, RequestCounts(0, 0, len(rows)), 0, key):
            return part
        winner = self._batches.chunk_results(batch.id, index) or chunk_key(batch.id, index)
        recorded: dict[str, Any] = json.loads(self._blobs.get(winner))
        return recorded

    def _chunk_lines(self, batch: Batch, index: int) -> list[BatchLine]:
        return read_chunk(self._blobs.get(input_key(batch.id, index)))

    def _result_file(self, batch: Batch, kind: str) -> FileObject:
        """The output or error file's metadata; its size and lines come as it is written."""
        return FileObject(
            id=result_file_id(batch.id, kind),
            org_id=batch.org_id,
            purpose=BATCH_OUTPUT,
            filename=f"{batch.id}_{kind}.jsonl",
            bytes=0,
            created_at=self._clock.now(),
        )


@dataclass
class _ChunkProgress:
    """The results of a chunk's lines so far."""

    output: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    unrun_count: int = 0

    @classmethod
    def load(cls, blobs: BlobStore, key: str) -> _ChunkProgress:
        if not blobs.exists(key):
            return cls([], [])
        saved = json.loads(blobs.get(key))
        return cls(saved["output"], saved["errors"], saved["unrun"])

    @property
    def done(self) -> int:
        return len(self.output) + len(self.errors)

    @property
    def counts(self) -> RequestCounts:
        return RequestCounts(0, len(self.output), len(self.errors))

    def ran(self, entry: dict[str, Any], ok: bool) -> None:
        (self.output if ok else self.errors).append(entry)

    def unrun(self, entry: dict[str, Any]) -> None:
        self.errors.append(entry)
        self.unrun_count += 1

    def results(self) -> bytes:
        body = {"output": self.output, "errors": self.errors}
        return json.dumps(body, separators=(",", ":")).encode()

    def save(self, blobs: BlobStore, key: str) -> None:
        body = {"output": self.output, "errors": self.errors, "unrun": self.unrun_count}
        blobs.put(key, json.dumps(body, separators=(",", ":")).encode(), "application/json")


class _StatusView:
    """The batch's status as the store has it, read again at most every few seconds."""

    def __init__(self, store: BatchStore, batch: Batch, clock: Clock) -> None:
        self._store = store
        self._id = batch.id
        self._status = batch.status
        self._clock = clock
        self._read_at = clock.monotonic()

    def current(self) -> str:
        if self._clock.monotonic() - self._read_at >= STATUS_CHECK_SECONDS:
            found = self._store.get_batch(self._id)
            self._status = found.status if found is not None else self._status
            self._read_at = self._clock.monotonic()
        return self._status


class _Keepalive:
    """Calls the step's keepalive at most every KEEPALIVE_SECONDS; remembers a refusal."""

    def __init__(self, keepalive: Callable[[], bool], clock: Clock) -> None:
        self._keepalive = keepalive
        self._clock = clock
        self._last = clock.monotonic()
        self._alive = True

    def __call__(self) -> bool:
        if self._alive and self._clock.monotonic() - self._last >= KEEPALIVE_SECONDS:
            self._alive = self._keepalive()
            self._last = self._clock.monotonic()
        return self._alive

    def wait(self, seconds: float, sleep: Callable[[float], None]) -> bool:
        """Sleep `seconds`, staying alive; False if the task stopped waiting meanwhile."""
        remaining = seconds
        while remaining > 0 and self._alive:
            step = min(remaining, KEEPALIVE_SECONDS)
            sleep(step)
            remaining -= step
            self()
        return self._alive
