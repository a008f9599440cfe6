"""The batch worker's steps: the Lambda entry point driving a real execution, a chunk that
is delivered twice (counted and billed once), waiting out rate limits, retrying transient
server errors, and a revoked key; plus the state machine's shape."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.adapters.s3_blobs import S3ObjectWriter
from gantry.adapters.sqs_queue import Received
from gantry.domain.batch_service import BatchWorker, chunk_key, input_key
from gantry.domain.batches import (
    Batch,
    LineResult,
    RequestCounts,
    new_batch_id,
    read_lines,
    write_lines,
)
from gantry.domain.errors import ServiceUnavailable
from gantry.domain.keys import parse_api_key
from gantry.lambda_workers import batches as batch_lambda
from gantry.local.invoke import LocalContext
from gantry.local.job_resources import BATCH_ASL_PATH
from gantry.runtime import Runtime
from tests.conftest import Keys
from tests.integration.jobs.conftest import MovingClock, jsonl, taken, upload, wait_until
from tests.integration.jobs.test_batches import BATCHES, create_batch, echo_line, file_lines
from tests.integration.jobs.test_lambda_workers import sqs_event

CONTEXT = LocalContext("gantry-batch_worker", remaining_millis=900_000)


def next_step(runtime: Runtime, batch_id: str, step: str | tuple[str, ...]) -> list[Received]:
    """The batch queue's messages for this batch and step (other tests may have left theirs,
    which go back to the queue at once)."""
    steps = (step,) if isinstance(step, str) else step
    return taken(
        runtime.jobs.batch_queue,
        lambda body: body.get("batch_id") == batch_id and body.get("step") in steps,
    )


def usage_requests(api: TestClient) -> int:
    requests: int = api.get("/v1/usage").json()["totals"]["requests"]
    return requests


def test_the_lambda_worker_runs_a_batch_and_a_redelivered_chunk_counts_once(
    app_client: TestClient, keys: Keys, runtime: Runtime
) -> None:
    app_client.headers["Authorization"] = f"Bearer {keys.create(org_id='org-batch-lambda')}"
    rows = [echo_line(i) for i in range(30)]  # two chunks of 25 and 5
    source = upload(app_client, jsonl(rows), purpose="batch")
    batch = create_batch(app_client, source["id"])

    assert batch_lambda(sqs_event(next_step(runtime, batch["id"], "validate")), CONTEXT) == {
        "batchItemFailures": []
    }
    chunks: list[Received] = []
    while len(chunks) < 2:  # the Map may hand out its items one at a time
        arrived = next_step(runtime, batch["id"], "run")
        assert batch_lambda(sqs_event(arrived), CONTEXT) == {"batchItemFailures": []}
        chunks.extend(arrived)
    running = app_client.get(f"{BATCHES}/{batch['id']}").json()
    assert running["request_counts"] == {"total": 30, "completed": 30, "failed": 0}
    billed = usage_requests(app_client)
    assert billed == 30

    # The same chunk again (an SQS redelivery): nothing is counted or billed twice.
    batch_lambda(sqs_event(chunks[:1]), CONTEXT)
    again = app_client.get(f"{BATCHES}/{batch['id']}").json()
    assert again["request_counts"] == running["request_counts"]
    assert usage_requests(app_client) == billed

    batch_lambda(sqs_event(next_step(runtime, batch["id"], "finalize")), CONTEXT)
    done = wait_until(
        lambda: (
            (b := app_client.get(f"{BATCHES}/{batch['id']}").json())["status"] == "completed" and b
        )
    )
    assert len(file_lines(app_client, done["output_file_id"])) == 30


class ScriptedRunner:
    """Answers each line from a script of results, recording every call."""

    def __init__(self, script: list[LineResult]) -> None:
        self.script = script
        self.calls: list[str] = []

    def run(self, key_id: str, request_id: str, url: str, body: Mapping[str, Any]) -> LineResult:
        self.calls.append(request_id)
        result = self.script.pop(0)
        return LineResult(result.status_code, request_id, result.body, result.retry_after)


class Callbacks:
    def __init__(self) -> None:
        self.answers: list[tuple[str, Any]] = []

    def heartbeat(self, token: str) -> bool:
        return True

    def succeed(self, token: str, output: Mapping[str, Any]) -> bool:
        self.answers.append(("succeed", dict(output)))
        return True

    def fail(self, token: str, error: str, cause: str) -> bool:
        self.answers.append(("fail", (error, json.loads(cause))))
        return True


def error(status: int, code: str, retryable: bool) -> dict[str, Any]:
    return {"error": {"code": code, "retryable": retryable, "message": f"{status}"}}


def stored_batch(runtime: Runtime, lines: int, status: str = "in_progress") -> Batch:
    data = jsonl([echo_line(i) for i in range(lines)])
    file = runtime.jobs.files.upload("org-batch-worker", "in.jsonl", "batch", data)
    now = time.time()
    batch = Batch(
        id=new_batch_id(),
        org_id="org-batch-worker",
        key_id="key-batch-worker",
        endpoint="/v1/chat/completions",
        input_file_id=file.id,
        completion_window="24h",
        created_at=now,
        expires_at=now + 86_400,
        retain_until=now + 2 * 86_400,
        status=status,
        request_counts=RequestCounts(total=lines),
        chunk_count=1,
    )
    runtime.jobs.batch_store.create_batch(batch)
    # What the validate step leaves: the chunk's own copy of its lines.
    runtime.jobs.blobs.put(input_key(batch.id, 0), write_lines(read_lines(data)), "x")
    return batch


class Queue:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, body: Mapping[str, Any], delay_seconds: int = 0) -> None:
        self.sent.append(dict(body))


def worker(
    runtime: Runtime,
    runner: ScriptedRunner,
    sleeps: list[float],
    callbacks: Callbacks | None = None,
    queue: Queue | None = None,
) -> BatchWorker:
    jobs = runtime.jobs
    return BatchWorker(
        batches=jobs.batch_store,
        files=jobs.files,
        blobs=jobs.blobs,
        runner=runner,
        callbacks=callbacks or Callbacks(),
        queue=queue or Queue(),
        clock=runtime.clock,
        settings=jobs.batch_settings,
        sleep=sleeps.append,
    )


def run_message(batch: Batch, lines: int) -> dict[str, Any]:
    return {
        "step": "run",
        "batch_id": batch.id,
        "task_token": "token",
        "chunk": {"index": 0, "start": 0, "end": lines},
    }


def run_chunk(runtime: Runtime, w: BatchWorker, batch: Batch, lines: int) -> dict[str, Any]:
    w.handle(run_message(batch, lines), lambda: True)
    part: dict[str, Any] = json.loads(
        runtime.jobs.blobs.get(f"batches/{batch.id}/chunks/000000.json")
    )
    return part


def test_rate_limited_lines_wait_and_run_again(runtime: Runtime) -> None:
    batch = stored_batch(runtime, 1)
    ok = LineResult(200, "", {"object": "chat.completion"})
    limited = LineResult(429, "", error(429, "rate_limit_exceeded", True), retry_after=3.0)
    runner = ScriptedRunner([limited, limited, ok])
    sleeps: list[float] = []

    part = run_chunk(runtime, worker(runtime, runner, sleeps), batch, 1)
    assert sleeps == [3.0, 3.0]
    assert len(runner.calls) == 3 and len(set(runner.calls)) == 1  # one request id
    assert [o["response"]["status_code"] for o in part["output"]] == [200]
    stored = runtime.jobs.batch_store.get_batch(batch.id)
    assert stored is not None and stored.request_counts.completed == 1


def test_a_chunk_that_runs_out_of_time_continues_in_a_new_message(runtime: Runtime) -> None:
    batch = stored_batch(runtime, 5)
    ok = LineResult(200, "", {"object": "chat.completion"})
    runner = ScriptedRunner([ok] * 5)
    callbacks, queue = Callbacks(), Queue()
    w = worker(runtime, runner, [], callbacks, queue)
    time_left = iter([600.0, 30.0])  # the invocation nears its end before line 3

    w.handle(run_message(batch, 5), lambda: True, lambda: next(time_left))
    assert len(runner.calls) == 2
    assert callbacks.answers == []  # the task token waits for the continuation
    (continuation,) = queue.sent
    assert continuation["task_token"] == "token" and continuation["chunk"]["end"] == 5

    w.handle(continuation, lambda: True, lambda: 600.0)
    assert runner.calls == [f"batch_req_{batch.id.removeprefix('batch_')}_{n}" for n in range(1, 6)]
    assert callbacks.answers == [("succeed", {})]
    part = json.loads(runtime.jobs.blobs.get(f"batches/{batch.id}/chunks/000000.json"))
    assert [o["custom_id"] for o in part["output"]] == [f"req-{i}" for i in range(5)]
    stored = runtime.jobs.batch_store.get_batch(batch.id)
    assert stored is not None and stored.request_counts.completed == 5


def test_a_rate_limit_that_outlasts_the_invocation_continues_the_chunk(
    runtime: Runtime,
) -> None:
    batch = stored_batch(runtime, 2)
    ok = LineResult(200, "", {"object": "chat.completion"})
    limited = LineResult(429, "", error(429, "rate_limit_exceeded", True), retry_after=30.0)
    runner = ScriptedRunner([ok, limited, ok])
    callbacks, queue = Callbacks(), Queue()
    w = worker(runtime, runner, [], callbacks, queue)

    # The margin is one line's budget (60 s here) plus 30 s: waiting 30 s would leave 70.
    w.handle(run_message(batch, 2), lambda: True, lambda: 100.0)
    assert len(runner.calls) == 2 and callbacks.answers == []
    (continuation,) = queue.sent
    w.handle(continuation, lambda: True, lambda: 900.0)
    assert len(runner.calls) == 3 and runner.calls[1] == runner.calls[2]  # line 2 again
    assert callbacks.answers == [("succeed", {})]
    part = json.loads(runtime.jobs.blobs.get(f"batches/{batch.id}/chunks/000000.json"))
    assert [o["custom_id"] for o in part["output"]] == ["req-0", "req-1"]


def test_transient_server_errors_are_retried_then_reported(runtime: Runtime) -> None:
    batch = stored_batch(runtime, 2)
    unavailable = LineResult(503, "", error(503, "service_unavailable", True))
    bad = LineResult(400, "", error(400, "invalid_value", False))
    runner = ScriptedRunner([unavailable, unavailable, unavailable, bad])
    sleeps: list[float] = []

    part = run_chunk(runtime, worker(runtime, runner, sleeps), batch, 2)
    assert sleeps == [2.0, 4.0]  # three attempts in all for the 503s, none for the 400
    assert [e["response"]["status_code"] for e in part["errors"]] == [503, 400]
    stored = runtime.jobs.batch_store.get_batch(batch.id)
    assert stored is not None and stored.request_counts.failed == 2


def test_a_revoked_key_stops_its_batch_lines(
    app_client: TestClient, keys: Keys, runtime: Runtime
) -> None:
    parsed = parse_api_key(keys.create(org_id="org-batch-revoked"))
    assert parsed is not None
    key_id = parsed[0]
    result = runtime.jobs.line_runner.run(
        key_id, "batch_req_x_1", "/v1/chat/completions", echo_line(0)["body"]
    )
    assert result.status_code == 200
    record = runtime.key_store.get_key(key_id)
    assert record is not None
    runtime.key_store.put_key(replace(record, revoked_at=time.time() - 1))
    runtime.authenticator.forget(key_id)
    refused = runtime.jobs.line_runner.run(
        key_id, "batch_req_x_2", "/v1/chat/completions", echo_line(0)["body"]
    )
    assert refused.status_code == 401
    assert refused.body["error"]["code"] == "revoked_api_key"


def test_the_state_machine_runs_chunks_in_a_bounded_map_of_callback_tasks() -> None:
    states = json.loads(BATCH_ASL_PATH.read_text())["States"]
    assert list(states)[:4] == ["Validate", "RunChunks", "Finalize", "Notify"]
    run = states["RunChunks"]
    assert run["Type"] == "Map"
    assert run["MaxConcurrencyPath"] == "$.max_concurrency"
    assert run["ItemsPath"] == "$.plan.chunks"
    task = run["ItemProcessor"]["States"]["RunChunk"]
    assert task["Resource"] == "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
    # Waiting on the shared queue is not a dead worker: no heartbeat timeout on a chunk.
    assert "HeartbeatSecondsPath" not in task and "HeartbeatSeconds" not in task
    assert task["TimeoutSecondsPath"] == "$.timeouts.chunk"
    assert task["Parameters"]["QueueUrl"] == "${BatchQueueUrl}"
    # A failed run still finalizes: the results recorded so far reach the files.
    assert run["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.run", "Next": "Finalize"}
    ]
    assert states["Finalize"]["Parameters"]["MessageBody"]["run.$"] == "$.run"
    for name in ("Validate", "Finalize"):
        assert states[name]["Catch"][0]["Next"] == "RecordFailure"
    assert states["NotifyFailed"]["Parameters"]["MessageBody"]["type"] == "batch.failed"


def test_a_line_run_twice_under_its_request_id_is_billed_and_reserved_once(
    app_client: TestClient, keys: Keys, runtime: Runtime
) -> None:
    key = keys.create(org_id="org-batch-rerun")
    parsed = parse_api_key(key)
    assert parsed is not None
    app_client.headers["Authorization"] = f"Bearer {key}"
    body = {
        "model": "gantry-small",
        "seed": 3,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Describe the harbour at dawn"}],
    }
    runner = runtime.jobs.line_runner
    first = runner.run(parsed[0], "batch_req_rerun_1", "/v1/chat/completions", body)
    second = runner.run(parsed[0], "batch_req_rerun_1", "/v1/chat/completions", body)
    assert first.status_code == second.status_code == 200

    report = app_client.get("/v1/usage").json()
    assert report["totals"]["requests"] == 1
    tokens = first.body["usage"]["total_tokens"]
    assert report["totals"]["total_tokens"] == tokens
    daily = [limit for limit in report["limits"] if limit["dimension"] == "tokens_per_day"]
    assert daily and all(limit["used"] == tokens for limit in daily), report["limits"]


def test_a_finalize_delivered_again_after_the_batch_ended_answers_again(
    runtime: Runtime,
) -> None:
    batch = stored_batch(runtime, 1, status="completed")
    callbacks = Callbacks()
    w = worker(runtime, ScriptedRunner([]), [], callbacks)
    w.handle({"step": "finalize", "batch_id": batch.id, "task_token": "t"}, lambda: True)
    assert callbacks.answers == [("succeed", {"status": "completed", "event": "batch.completed"})]


def test_a_failed_run_still_finalizes_what_ran(
    app_client: TestClient, keys: Keys, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_client.headers["Authorization"] = f"Bearer {keys.create(org_id='org-batch-broken')}"
    source = upload(app_client, jsonl([echo_line(i) for i in range(60)]), purpose="batch")
    batch = create_batch(app_client, source["id"])  # chunks of 25, 25 and 10 lines
    queue = runtime.jobs.batch_queue
    batch_lambda(sqs_event(next_step(runtime, batch["id"], "validate")), CONTEXT)

    handled: list[int] = []
    final: list[Received] = []
    while not final:
        for message in next_step(runtime, batch["id"], ("run", "finalize")):
            if message.body["step"] == "finalize":
                final.append(message)
                continue
            index = message.body["chunk"]["index"]
            if index not in handled:
                handled.append(index)
                if len(handled) == 2:  # the second chunk's worker gives up
                    token = message.body["task_token"]
                    runtime.jobs.callbacks.fail(token, "Worker.Crashed", "{}")
                else:  # (Step Functions stops the other iterations; the emulator does not)
                    batch_lambda(sqs_event([message]), CONTEXT)
            queue.delete(message.receipt)  # as the event source mapping does

    # Storage fails as the error file is closed: the message stays, to come again.
    closes: list[str] = []
    close = S3ObjectWriter.close

    def close_fails_once(writer: S3ObjectWriter) -> None:
        closes.append("close")
        if len(closes) == 2:
            raise ServiceUnavailable("storage is down", details={"subsystem": "storage"})
        close(writer)

    monkeypatch.setattr(S3ObjectWriter, "close", close_fails_once)
    assert batch_lambda(sqs_event(final), CONTEXT)["batchItemFailures"]
    stuck = app_client.get(f"{BATCHES}/{batch['id']}").json()
    assert stuck["status"] == "finalizing" and stuck["error_file_id"] is None
    assert batch_lambda(sqs_event(final), CONTEXT)["batchItemFailures"] == []
    done = app_client.get(f"{BATCHES}/{batch['id']}").json()
    assert done["status"] == "failed", done
    assert done["errors"]["data"][0]["code"] == "batch_failed"
    counts = done["request_counts"]
    assert counts["total"] == 60 and counts["completed"] + counts["failed"] == 60
    ran = file_lines(app_client, done["output_file_id"])
    assert len(ran) == counts["completed"] >= 25
    never = file_lines(app_client, done["error_file_id"])
    assert {e["error"]["code"] for e in never} == {"batch_failed"}
    assert {e["custom_id"] for e in ran}.isdisjoint(e["custom_id"] for e in never)
    assert len(ran) + len(never) == 60


def test_a_batch_that_outlived_its_workflow_fails_when_read(
    runtime: Runtime, clock: MovingClock
) -> None:
    batch = stored_batch(runtime, 1)
    service = runtime.jobs.batches
    assert service.get(batch.org_id, batch.id).status == "in_progress"
    clock.advance(86_400 + service.settings.finalize_seconds + 1)
    failed = service.get(batch.org_id, batch.id)
    assert failed.status == "failed"
    assert [e.code for e in failed.errors] == ["batch_timed_out"]
    stored = runtime.jobs.batch_store.get_batch(batch.id)
    assert stored is not None and stored.status == "failed" and "failed_at" in stored.times


def test_a_chunk_left_running_after_its_run_failed_stops_before_billing(
    runtime: Runtime,
) -> None:
    batch = stored_batch(runtime, 3, status="finalizing")  # the Map failed; Finalize runs
    runner, callbacks = ScriptedRunner([]), Callbacks()
    worker(runtime, runner, [], callbacks).handle(run_message(batch, 3), lambda: True)
    assert runner.calls == []
    assert [answer for answer, _ in callbacks.answers] == ["fail"]
    assert runtime.jobs.batch_store.chunk_results(batch.id, 0) is None


def test_a_late_worker_that_records_its_chunk_first_is_what_finalize_reports(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed Map, Finalize writes a chunk it finds unrecorded as failed lines. A
    worker still running that chunk may record it between Finalize's look and Finalize's
    own record: then the worker's results are what the files show, matching the counts."""
    batch = stored_batch(runtime, 2)
    store, blobs = runtime.jobs.batch_store, runtime.jobs.blobs
    store.set_fields(batch.id, {"chunk_count": 1})  # as the validate step leaves it
    ran = [{"custom_id": f"request-{i}", "response": {"status_code": 200}} for i in range(2)]
    looked = store.chunk_results

    def worker_records_right_after_the_look(batch_id: str, index: int) -> str | None:
        found = looked(batch_id, index)
        if found is None:
            key = chunk_key(batch_id, index)
            blobs.put(key, json.dumps({"output": ran, "errors": []}).encode(), "x")
            assert store.record_chunk(batch_id, index, RequestCounts(0, 2, 0), 0, key)
        return found

    monkeypatch.setattr(store, "chunk_results", worker_records_right_after_the_look)
    w = worker(runtime, ScriptedRunner([]), [])
    assert w.finalize(batch, "States.TaskFailed") == {"status": "failed", "event": "batch.failed"}
    done = store.get_batch(batch.id)
    assert done is not None and done.error_file_id is None and done.output_file_id
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 0)
    output = blobs.get(f"files/{batch.org_id}/{done.output_file_id}").decode().splitlines()
    assert [json.loads(line) for line in output] == ran


def test_a_chunk_recorded_before_results_keys_reads_from_the_workers_key(
    runtime: Runtime,
) -> None:
    """Records written by the previous release name no results key: the chunk's worker
    wrote its results to the usual key, and Finalize reads them from there."""
    from gantry.adapters.aws import client

    batch = stored_batch(runtime, 2)
    store, blobs = runtime.jobs.batch_store, runtime.jobs.blobs
    store.set_fields(batch.id, {"chunk_count": 1})
    ran = [{"custom_id": f"request-{i}", "response": {"status_code": 200}} for i in range(2)]
    blobs.put(chunk_key(batch.id, 0), json.dumps({"output": ran, "errors": []}).encode(), "x")
    client("dynamodb", runtime.settings).put_item(
        TableName=runtime.settings.jobs_table,
        Item={
            "pk": {"S": f"BATCH#{batch.id}"},
            "sk": {"S": "CHUNK#000000"},
            "completed": {"N": "2"},
            "failed": {"N": "0"},
            "unrun": {"N": "0"},
        },
    )
    assert store.chunk_results(batch.id, 0) == ""
    w = worker(runtime, ScriptedRunner([]), [])
    assert w.finalize(batch) == {"status": "completed", "event": "batch.completed"}
    done = store.get_batch(batch.id)
    assert done is not None and done.output_file_id
    output = blobs.get(f"files/{batch.org_id}/{done.output_file_id}").decode().splitlines()
    assert [json.loads(line) for line in output] == ran
