"""Fine-tuning rules: hyperparameters, suffixes, model ids, polling, retention, failures,
and the JSONL rules of files."""

from __future__ import annotations

import pytest

from gantry.domain.errors import InvalidRequest
from gantry.domain.files import examples, validate_jsonl
from gantry.domain.fine_tuning import split_examples
from gantry.domain.jobs import (
    FineTuningJob,
    Hyperparameters,
    expired,
    failure_from_workflow,
    fine_tuned_model_id,
    parse_fine_tuned_model,
    parse_hyperparameters,
    retry_after,
    validate_suffix,
)


def job(status: str = "running", finished_at: float | None = None) -> FineTuningJob:
    return FineTuningJob(
        id="ftjob-abcdef123456",
        org_id="org-a",
        model="gantry-small",
        training_file="file-abcdef123456",
        fine_tuned_model_name="ft:gantry-small:org-a::ftjob-abcdef123456",
        provider="local",
        created_at=1000.0,
        expires_at=10_000_000.0,
        status=status,
        finished_at=finished_at,
    )


def test_hyperparameters_resolve_auto() -> None:
    assert parse_hyperparameters(None) == Hyperparameters()
    assert parse_hyperparameters({"n_epochs": "auto", "batch_size": 4}) == Hyperparameters(
        batch_size=4
    )
    assert parse_hyperparameters({"learning_rate_multiplier": 2}).learning_rate_multiplier == 2.0
    for bad in ({"n_epochs": 0}, {"n_epochs": 51}, {"n_epochs": True}, {"batch_size": 1.5}):
        with pytest.raises(InvalidRequest):
            parse_hyperparameters(bad)


def test_model_ids_round_trip_even_with_colons_in_the_base() -> None:
    model = fine_tuned_model_id("amazon.titan:0:8k", "org-a", "v1", "ftjob-abcdef123456")
    parsed = parse_fine_tuned_model(model)
    assert parsed is not None
    assert (parsed.base, parsed.org_id, parsed.suffix, parsed.job_id) == (
        "amazon.titan:0:8k",
        "org-a",
        "v1",
        "ftjob-abcdef123456",
    )
    assert parse_fine_tuned_model("gantry-small") is None
    assert parse_fine_tuned_model("ft:x:org::not-a-job") is None


def test_suffix_rules() -> None:
    assert validate_suffix(None) == ""
    assert validate_suffix("my-model_2") == "my-model_2"
    for bad in ("", "Caps", "x" * 19, "-lead", "a:b"):
        with pytest.raises(InvalidRequest):
            validate_suffix(bad)


def test_retry_after_only_while_active() -> None:
    assert retry_after(job("validating_files")) == 2
    assert retry_after(job("running")) == 5
    assert retry_after(job("succeeded", 2000.0)) is None


def test_retention_counts_from_the_finish() -> None:
    assert not expired(job("running"), 100, now=1e9)
    assert not expired(job("failed", 2000.0), 100, now=2099.0)
    assert expired(job("failed", 2000.0), 100, now=2100.0)


def test_workflow_failures_become_job_errors() -> None:
    detail = '{"code": "file_not_found", "message": "gone", "param": "training_file"}'
    error = failure_from_workflow("Job.Failed", detail)
    assert (error.code, error.message, error.param) == ("file_not_found", "gone", "training_file")
    timeout = failure_from_workflow("States.Timeout", None)
    assert timeout.code == "worker_timeout"
    assert failure_from_workflow("States.Runtime", None).code == "job_failed"


def test_held_out_split_is_seeded_and_disjoint() -> None:
    data = b"".join(b'{"text": "t%d", "label": "l%d"}\n' % (i, i % 2) for i in range(10))
    items = examples(data)
    assert validate_jsonl(data, "fine-tune").example_format == "classification"
    train, held = split_examples(items, seed=3, validation=None)
    assert len(held) == 2 and len(train) == 8
    assert not set(map(id, train)) & set(map(id, held))
    assert split_examples(items, seed=3, validation=None) == (train, held)
    assert split_examples(items, seed=3, validation=items[:1]) == (items, items[:1])
