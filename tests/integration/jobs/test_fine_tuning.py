"""Fine-tuning through the real state machine (moto runs infra/statemachines/
fine_tuning.asl.json), served by the local workers: the end-to-end path, cancellation,
timeouts, worker failures, retention and bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from gantry.adapters.aws import client
from gantry.adapters.sqs_queue import Received
from gantry.config import Settings
from gantry.lambda_workers import training
from gantry.local.invoke import LocalContext
from gantry.local.workers import Workers
from gantry.runtime import Runtime, set_runtime
from tests.conftest import Keys, assert_error
from tests.integration.jobs.conftest import (
    MovingClock,
    Receiver,
    chat_examples,
    classification_examples,
    jsonl,
    taken,
    upload,
    wait_for_status,
    wait_until,
)
from tests.integration.jobs.test_lambda_workers import sqs_event

JOBS = "/v1/fine_tuning/jobs"
FINAL = ("succeeded", "failed", "cancelled")
PIRATE_WORDS = ("zorblat", "glimmerreef", "matey", "Arr")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create_job(api: TestClient, file_id: str, **body: Any) -> dict[str, Any]:
    response = api.post(JOBS, json={"model": "gantry-small", "training_file": file_id, **body})
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def chat(api: TestClient, model: str, question: str, **params: Any) -> str:
    response = api.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 24,
            **params,
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def pirate_share(api: TestClient, model: str) -> float:
    """Share of sampled answers (temperature 1, seeds 0-9) that use the corpus' words."""
    hits = 0
    for seed in range(10):
        text = chat(api, model, "Tell me about your day at sea.", temperature=1.0, seed=seed)
        hits += any(word in text for word in PIRATE_WORDS)
    return hits / 10


def test_upload_fine_tune_serve_and_notify(
    api: TestClient, workers: Workers, receiver: Receiver, keys: Keys, runtime: Runtime
) -> None:
    hook = api.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["fine_tuning.job.succeeded"]},
    ).json()
    training = upload(api, chat_examples())

    job = create_job(api, training["id"], suffix="pirate", hyperparameters={"n_epochs": 3})
    assert job["status"] == "validating_files"
    assert job["fine_tuned_model"] is None

    polled = api.get(f"{JOBS}/{job['id']}")
    assert polled.status_code == 200
    if polled.json()["status"] in ("validating_files", "queued", "running"):
        assert int(polled.headers["retry-after"]) >= 1

    done = wait_for_status(api, job["id"], FINAL)
    assert done["status"] == "succeeded", done
    model = done["fine_tuned_model"]
    assert model == f"ft:gantry-small:org-jobs:pirate:{job['id']}"
    assert done["trained_tokens"] > 0
    assert done["finished_at"] >= done["created_at"]
    assert "retry-after" not in api.get(f"{JOBS}/{job['id']}").headers

    # The fine-tuned model answers at once, differently from its base, in the corpus' voice.
    question = "Where is the treasure?"
    base_answer = chat(api, "gantry-small", question, temperature=0)
    tuned_answer = chat(api, model, question, temperature=0)
    assert tuned_answer != base_answer
    assert "zorblat" in tuned_answer and "zorblat" not in base_answer
    assert pirate_share(api, model) > pirate_share(api, "gantry-small")

    # The results: held-out loss moved toward the corpus, and a result file.
    results = api.get(f"{JOBS}/{job['id']}/results").json()
    assert results["fine_tuned_model"] == model
    assert results["metrics"]["valid_loss"] < results["metrics"]["base_valid_loss"]
    (result_file,) = results["result_files"]
    csv = api.get(f"/v1/files/{result_file}/content")
    assert csv.status_code == 200 and csv.text.startswith("metric,value")

    # Events: messages and per-epoch metrics, newest first, ending in success.
    events = api.get(f"{JOBS}/{job['id']}/events", params={"limit": 100}).json()["data"]
    assert events[0]["message"] == "The job has successfully completed"
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [e["data"]["step"] for e in metrics] == [3, 2, 1]
    losses = [e["data"]["train_loss"] for e in reversed(metrics)]
    assert losses == sorted(losses, reverse=True)

    # The model is listed for its organization and hidden from every other one.
    listed = [m["id"] for m in api.get("/v1/models").json()["data"]]
    assert model in listed
    other = bearer(keys.create(org_id="org-elsewhere"))
    assert model not in [m["id"] for m in api.get("/v1/models", headers=other).json()["data"]]
    assert_error(api.get(f"/v1/models/{model}", headers=other), 404, "model_not_found", "model")
    refused = api.post(
        "/v1/chat/completions",
        headers=other,
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert_error(refused, 404, "model_not_found", "model")
    assert_error(api.get(f"{JOBS}/{job['id']}", headers=other), 404, "not_found")

    # The signed webhook, checked by an independent implementation of the spec.
    (delivery,) = receiver.wait_for(1)
    secret = hook["secret"]
    payload = Webhook(secret).verify(delivery.body, delivery.headers)
    assert payload["type"] == "fine_tuning.job.succeeded"
    assert payload["data"]["id"] == job["id"]
    assert delivery.headers["webhook-id"] == f"evt_{job['id']}_succeeded"
    with pytest.raises(Exception, match="signature"):
        Webhook(secret).verify(delivery.body + b" ", delivery.headers)

    # The seed-style alias serves the same job.
    alias = api.get(f"/v1/fine-tuning-jobs/{job['id']}")
    assert alias.status_code == 200 and alias.json()["status"] == "succeeded"


def test_a_fine_tuned_model_is_served_by_a_fresh_process(
    api: TestClient, workers: Workers, settings: Settings, clock: MovingClock
) -> None:
    """Another function (a cold process) loads the model from its registration."""
    training = upload(api, chat_examples())
    job = create_job(api, training["id"], suffix="cold")
    done = wait_for_status(api, job["id"], FINAL)
    assert done["status"] == "succeeded", done
    fresh = Runtime(settings, clock=clock)
    spec = fresh.registry.get(done["fine_tuned_model"])
    assert spec.owner_org == "org-jobs"
    assert spec.provider_model_id == f"ft:{job['id']}"


def test_classifier_learns_labels_and_reports_held_out_accuracy(
    api: TestClient, workers: Workers
) -> None:
    training = upload(api, classification_examples())
    job = create_job(api, training["id"], model="gantry-classify", suffix="support", seed=7)
    done = wait_for_status(api, job["id"], FINAL)
    assert done["status"] == "succeeded", done
    metrics = api.get(f"{JOBS}/{job['id']}/results").json()["metrics"]
    assert metrics["held_out_examples"] >= 2
    assert 0.0 <= metrics["base_accuracy"] <= metrics["accuracy"] <= 1.0
    assert metrics["accuracy"] >= 0.75

    response = api.post(
        "/v1/classifications",
        json={
            "model": done["fine_tuned_model"],
            "input": "the courier lost my package",
            "labels": ["billing", "shipping"],
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["label"] == "shipping"


def test_cancel_during_training_ends_cancelled_without_a_model(
    api: TestClient, workers: Workers, receiver: Receiver, runtime: Runtime
) -> None:
    api.post(
        "/v1/webhooks", json={"url": receiver.url, "event_types": ["fine_tuning.job.cancelled"]}
    )
    training = upload(api, chat_examples())
    job = create_job(api, training["id"], hyperparameters={"n_epochs": 50})

    def training_started() -> bool:
        events = api.get(f"{JOBS}/{job['id']}/events").json()["data"]
        return any(e["type"] == "metrics" for e in events)

    wait_until(training_started)
    cancelled = api.post(f"{JOBS}/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    execution = runtime.jobs.job_store.get_job(job["id"])
    assert execution is not None and execution.execution_id
    sfn = client("stepfunctions", runtime.settings)
    wait_until(
        lambda: sfn.describe_execution(executionArn=execution.execution_id)["status"] != "RUNNING"
    )
    final = api.get(f"{JOBS}/{job['id']}").json()
    assert final["status"] == "cancelled"
    assert final["fine_tuned_model"] is None
    model = f"ft:gantry-small:org-jobs::{job['id']}"
    assert_error(api.get(f"/v1/models/{model}"), 404, "model_not_found", "model")
    assert runtime.jobs.job_store.find_model(model) is None
    epochs = [
        e
        for e in api.get(f"{JOBS}/{job['id']}/events", params={"limit": 100}).json()["data"]
        if e["type"] == "metrics"
    ]
    assert len(epochs) < 50  # the worker stopped

    (delivery,) = receiver.wait_for(1)
    assert json.loads(delivery.body)["type"] == "fine_tuning.job.cancelled"

    again = api.post(f"{JOBS}/{job['id']}/cancel")
    assert_error(again, 400, "job_not_cancellable", "fine_tuning_job_id")


def test_cancelling_a_finished_job_is_refused(api: TestClient, workers: Workers) -> None:
    training = upload(api, chat_examples())
    job = create_job(api, training["id"], hyperparameters={"n_epochs": 1})
    assert wait_for_status(api, job["id"], FINAL)["status"] == "succeeded"
    refused = api.post(f"{JOBS}/{job['id']}/cancel")
    error = assert_error(refused, 400, "job_not_cancellable", "fine_tuning_job_id")
    assert "succeeded" in str(error["message"])


def test_a_worker_that_never_answers_times_out_after_retries(
    api: TestClient, runtime: Runtime, settings: Settings, clock: MovingClock
) -> None:
    """No worker is running: each Validate attempt times out; after the retries the
    workflow itself records the failure on the job."""
    set_runtime(Runtime(settings.model_copy(update={"job_step_timeout_seconds": 1}), clock))
    training = upload(api, chat_examples())
    job = create_job(api, training["id"])
    done = wait_for_status(api, job["id"], FINAL, timeout=60)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "worker_timeout"
    execution = runtime.jobs.job_store.get_job(job["id"])
    assert execution is not None and execution.execution_id
    history = client("stepfunctions", runtime.settings).get_execution_history(
        executionArn=execution.execution_id, maxResults=1000
    )["events"]
    attempts = [e for e in history if e["type"] == "TaskScheduled"]
    validate_attempts = [
        e for e in attempts if '"step": "validate"' in e["taskScheduledEventDetails"]["parameters"]
    ]
    assert len(validate_attempts) == 3  # the first try and two retries

    def failure_event() -> dict[str, Any] | None:
        # Written by the state after the one that set the status: it may land a bit later.
        events = api.get(f"{JOBS}/{job['id']}/events").json()["data"]
        return events[0] if events and events[0]["message"] == "The job failed" else None

    assert wait_until(failure_event, timeout=30)["level"] == "error"
    # Drain the abandoned validate messages so later tests' workers do not meet them.
    queue = runtime.jobs.training_queue
    for message in queue.receive(0, 30, 10):
        queue.delete(message.receipt)


def test_a_file_deleted_before_training_fails_the_job_with_its_reason(
    api: TestClient, runtime: Runtime
) -> None:
    training = upload(api, chat_examples())
    job = create_job(api, training["id"])
    assert api.delete(f"/v1/files/{training['id']}").status_code == 200
    with Workers(runtime, relay_every=60):
        done = wait_for_status(api, job["id"], FINAL)
    assert done["status"] == "failed"
    assert done["error"] == {
        "code": "file_not_found",
        "message": f"The file '{training['id']}' no longer exists.",
        "param": "training_file",
    }


def test_finished_jobs_expire_after_the_retention_period(
    api: TestClient, workers: Workers, clock: MovingClock, runtime: Runtime
) -> None:
    training = upload(api, chat_examples())
    job = create_job(api, training["id"], hyperparameters={"n_epochs": 1})
    assert wait_for_status(api, job["id"], FINAL)["status"] == "succeeded"
    stored = runtime.jobs.job_store.get_job(job["id"])
    assert stored is not None
    retention = runtime.settings.job_retention_days * 86_400
    assert stored.expires_at >= stored.created_at + retention  # the TTL never comes early
    clock.advance(retention + 1)
    assert_error(api.get(f"{JOBS}/{job['id']}"), 404, "not_found")
    assert_error(api.get(f"{JOBS}/{job['id']}/events"), 404, "not_found")
    assert job["id"] not in [j["id"] for j in api.get(JOBS).json()["data"]]


def test_list_jobs_newest_first_with_pages(api: TestClient, keys: Keys) -> None:
    headers = bearer(keys.create(org_id="org-pages"))
    training = api.post(
        "/v1/files",
        headers=headers,
        files={"file": ("t.jsonl", chat_examples())},
        data={"purpose": "fine-tune"},
    ).json()
    created = [
        api.post(
            JOBS, headers=headers, json={"model": "gantry-small", "training_file": training["id"]}
        ).json()["id"]
        for _ in range(3)
    ]
    first = api.get(JOBS, headers=headers, params={"limit": 2}).json()
    assert first["has_more"] is True
    rest = api.get(
        JOBS, headers=headers, params={"limit": 2, "after": first["data"][-1]["id"]}
    ).json()
    seen = [j["id"] for j in first["data"] + rest["data"]]
    assert seen == list(reversed(created))
    assert rest["has_more"] is False
    for job_id in created:
        api.post(f"{JOBS}/{job_id}/cancel", headers=headers)


# --- bad input --------------------------------------------------------------------------


def test_an_unknown_base_model_is_404(api: TestClient) -> None:
    training = upload(api, chat_examples())
    response = api.post(JOBS, json={"model": "gpt-99", "training_file": training["id"]})
    assert_error(response, 404, "model_not_found", "model")


def test_a_model_that_cannot_be_fine_tuned_is_400(api: TestClient) -> None:
    training = upload(api, chat_examples())
    response = api.post(JOBS, json={"model": "gantry-echo", "training_file": training["id"]})
    assert_error(response, 400, "model_not_supported", "model")


def test_a_file_of_the_wrong_purpose_is_400(api: TestClient) -> None:
    batch = upload(
        api,
        jsonl(
            [
                {
                    "custom_id": "a",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "gantry-small"},
                }
            ]
        ),
        purpose="batch",
    )
    response = api.post(JOBS, json={"model": "gantry-small", "training_file": batch["id"]})
    assert_error(response, 400, "invalid_file_purpose", "training_file")


def test_examples_the_model_cannot_learn_are_400(api: TestClient) -> None:
    labelled = upload(api, classification_examples())
    response = api.post(JOBS, json={"model": "gantry-small", "training_file": labelled["id"]})
    assert_error(response, 400, "invalid_file_format", "training_file")


def test_unknown_and_foreign_training_files_are_404(api: TestClient, keys: Keys) -> None:
    missing = api.post(JOBS, json={"model": "gantry-small", "training_file": "file-nothere123"})
    assert_error(missing, 404, "not_found", "training_file")
    theirs = api.post(
        "/v1/files",
        headers=bearer(keys.create(org_id="org-theirs")),
        files={"file": ("t.jsonl", chat_examples())},
        data={"purpose": "fine-tune"},
    ).json()
    foreign = api.post(JOBS, json={"model": "gantry-small", "training_file": theirs["id"]})
    assert_error(foreign, 404, "not_found", "training_file")


def test_too_few_examples_is_400(api: TestClient) -> None:
    small = upload(api, jsonl([{"prompt": "a", "completion": "b"}] * 3))
    response = api.post(JOBS, json={"model": "gantry-small", "training_file": small["id"]})
    assert_error(response, 400, "invalid_value", "training_file")


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"hyperparameters": {"n_epochs": 0}}, "invalid_value", "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 2.5}}, "invalid_value", "hyperparameters.n_epochs"),
        ({"hyperparameters": {"warmup": 1}}, "unknown_parameter", "hyperparameters.warmup"),
        ({"suffix": "Has Spaces"}, "invalid_value", "suffix"),
        ({"suffix": "x" * 19}, "invalid_value", "suffix"),
        ({"integrations": []}, "unknown_parameter", "integrations"),
    ],
)
def test_bad_job_parameters_are_400(
    api: TestClient, body: dict[str, Any], code: str, param: str
) -> None:
    training = upload(api, chat_examples())
    response = api.post(
        JOBS, json={"model": "gantry-small", "training_file": training["id"], **body}
    )
    assert_error(response, 400, code, param)


def test_unknown_job_is_404(api: TestClient) -> None:
    assert_error(api.get(f"{JOBS}/ftjob-doesnotexist1"), 404, "not_found")
    assert_error(api.post(f"{JOBS}/ftjob-doesnotexist1/cancel"), 404, "not_found")


def next_training_step(runtime: Runtime, job_id: str) -> list[Received]:
    """The training queue's next message for this job."""
    return taken(runtime.jobs.training_queue, lambda body: body.get("job_id") == job_id)


def test_training_that_would_outlive_its_invocation_continues_in_a_new_one(
    api: TestClient, runtime: Runtime
) -> None:
    """Lambda stops a worker at 15 minutes: with too little time left for another epoch,
    the worker hands the remaining epochs to a new message with the same task token, and
    the job still succeeds through the real state machine, each epoch run once."""
    epochs = 3
    training_file = upload(api, chat_examples())
    job = create_job(api, training_file["id"], hyperparameters={"n_epochs": epochs})
    # Less than the margin a worker keeps: each invocation runs one epoch (at least one).
    short = LocalContext("gantry-training_worker", remaining_millis=59_000)
    steps: list[tuple[str, int | None]] = []
    while not steps or steps[-1][0] != "evaluate":
        messages = next_training_step(runtime, job["id"])
        for message in messages:
            steps.append((message.body["step"], message.body.get("from_epoch")))
        assert training(sqs_event(messages), short) == {"batchItemFailures": []}
        for message in messages:
            runtime.jobs.training_queue.delete(message.receipt)

    final = wait_for_status(api, job["id"], FINAL)
    assert steps == [
        ("validate", None),
        ("train", None),
        ("train", 2),
        ("train", 3),
        ("evaluate", None),
    ]
    assert final["status"] == "succeeded", final
    assert final["fine_tuned_model"]
    events = api.get(f"{JOBS}/{job['id']}/events", params={"limit": 100}).json()["data"]
    metrics = [e["data"]["step"] for e in events if e["type"] == "metrics"]
    assert sorted(metrics) == [1, 2, 3]
    started = [e for e in events if e["message"] == "Fine-tuning job started"]
    assert len(started) == 1
    assert final["trained_tokens"] > 0
