"""The Bedrock branch of the fine-tuning workflow: assertions on the state machine, and a
run through moto in which Bedrock's side is stubbed (moto records the customization job;
the test plays Bedrock by completing it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.session import get_session
from fastapi.testclient import TestClient

from gantry.domain.registry import ModelSpec
from gantry.local.job_resources import ASL_PATH
from gantry.local.workers import Workers
from gantry.runtime import Runtime
from tests.integration.jobs.conftest import jsonl, upload, wait_for_status, wait_until

JOBS = "/v1/fine_tuning/jobs"


def definition() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ASL_PATH.read_text())
    return loaded


def test_the_workflow_branches_to_the_bedrock_integration() -> None:
    states = definition()["States"]
    choice = states["ChooseTrainer"]
    assert choice["Choices"] == [
        {"Variable": "$.provider", "StringEquals": "bedrock", "Next": "StartBedrockCustomization"}
    ]
    start = states["StartBedrockCustomization"]
    assert start["Resource"] == "arn:aws:states:::bedrock:createModelCustomizationJob"
    params = start["Parameters"]
    assert params["RoleArn"] == "${BedrockRoleArn}"
    assert params["CustomizationType"] == "FINE_TUNING"
    assert params["BaseModelIdentifier.$"] == "$.bedrock.base_model"
    assert params["TrainingDataConfig"] == {"S3Uri.$": "$.bedrock.training_uri"}
    assert params["OutputDataConfig"] == {"S3Uri.$": "$.bedrock.output_uri"}
    assert params["ClientRequestToken.$"] == "$.job_id"  # a retried start is one job
    poll = states["GetBedrockCustomization"]
    assert poll["Resource"] == "arn:aws:states:::aws-sdk:bedrock:getModelCustomizationJob"
    assert states["WaitForBedrock"]["SecondsPath"] == "$.timeouts.bedrock_poll"
    done = states["BedrockDone"]
    assert done["Default"] == "WaitForBedrock"
    assert done["Choices"][0]["Next"] == "BedrockResult"
    assert states["BedrockResult"]["Next"] == "Register"  # the same record as local jobs
    assert states["MarkBedrockRunning"]["Catch"][0]["Next"] == "StopBedrockCustomization"


def test_every_step_has_a_timeout_and_the_commit_is_conditional() -> None:
    states = definition()["States"]
    for name in ("Validate", "Train", "Evaluate"):
        step = states[name]
        assert step["Resource"] == "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
        assert step["Parameters"]["MessageBody"]["task_token.$"] == "$$.Task.Token"
        assert step["TimeoutSecondsPath"].startswith("$.timeouts.")
        assert step["Retry"][0]["ErrorEquals"] == ["States.Timeout"]
        assert {c["Next"] for c in step["Catch"]} == {"RecordFailure", "Abandoned"}
    assert states["Train"]["HeartbeatSecondsPath"] == "$.timeouts.heartbeat"
    register = states["Register"]["Parameters"]
    assert register["ConditionExpression"] == "#status IN (:validating, :queued, :running)"
    assert states["Register"]["Next"] == "RegisterModel"
    assert states["NotifySucceeded"]["Parameters"]["QueueUrl"] == "${WebhookQueueUrl}"


@pytest.fixture
def bedrock_integration(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto forwards the Bedrock task's parameters to Bedrock as written, but Step Functions
    writes them in PascalCase and converts them to the API's names (and the response back):
    do that conversion here, as Step Functions does."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as aws_sdk,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_unsupported as unsupported,
    )

    def operation(task: Any, service: str | None, action: str | None) -> Any:
        model = get_session().get_service_model(task._get_boto_service_name(service))
        snake = task._get_boto_service_action(action)
        name = next(n for n in model.operation_names if _snake(n) == snake)
        return model.operation_model(name)

    def parameters(
        self: Any, params: dict[str, Any], service: str | None = None, action: str | None = None
    ) -> None:
        self._to_boto_request(params, operation(self, service, action).input_shape)

    def response(
        self: Any, result: Any, service: str | None = None, action: str | None = None
    ) -> None:
        self._from_boto_response(result, operation(self, service, action).output_shape)

    for cls in (unsupported.StateTaskServiceUnsupported, aws_sdk.StateTaskServiceAwsSdk):
        monkeypatch.setattr(cls, "_normalise_parameters", parameters)
        monkeypatch.setattr(cls, "_normalise_response", response)


def _snake(name: str) -> str:
    from botocore import xform_name

    return str(xform_name(name))


@pytest.fixture
def bedrock_model(runtime: Runtime) -> Iterator[ModelSpec]:
    spec = ModelSpec(
        id="titan-text-lite",
        provider="bedrock",
        provider_model_id="amazon.titan-text-lite-v1",
        version="1",
        context_window=4096,
        max_output_tokens=1024,
        input_price_per_million=0.15,
        output_price_per_million=0.2,
        capabilities=frozenset({"chat", "completions"}),
    )
    runtime.registry.register(spec)
    yield spec


def moto_customization(job_name: str) -> Any:
    from moto.bedrock.models import bedrock_backends

    for account in bedrock_backends:
        found = bedrock_backends[account]["us-east-1"].model_customization_jobs.get(job_name)
        if found is not None:
            return found
    return None


def test_a_bedrock_job_runs_through_create_model_customization_job(
    api: TestClient,
    workers: Workers,
    bedrock_integration: None,
    bedrock_model: ModelSpec,
    settings: Any,
) -> None:
    rows = [{"prompt": f"question {i}?", "completion": f" answer {i}."} for i in range(12)]
    training = upload(api, jsonl(rows))
    job = api.post(
        JOBS,
        json={
            "model": bedrock_model.id,
            "training_file": training["id"],
            "hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 2},
            "suffix": "titan",
        },
    ).json()
    assert job["status"] == "validating_files", job

    customization = wait_until(lambda: moto_customization(job["id"]))
    assert customization.base_model_identifier == "amazon.titan-text-lite-v1"
    assert customization.customization_type == "FINE_TUNING"
    assert customization.hyper_parameters == {
        "epochCount": "2",
        "batchSize": "1",
        "learningRate": "2e-05",
    }
    assert customization.training_data_config["s3Uri"] == (
        f"s3://{settings.files_bucket}/files/org-jobs/{training['id']}"
    )
    assert customization.output_data_config["s3Uri"] == (
        f"s3://{settings.files_bucket}/fine-tuning/{job['id']}/"
    )
    assert customization.role_arn.endswith("-bedrock-customization")
    wait_until(lambda: api.get(f"{JOBS}/{job['id']}").json()["status"] == "running")

    customization.status = "Completed"  # Bedrock finishes training
    done = wait_for_status(api, job["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", done
    assert done["fine_tuned_model"] == f"ft:titan-text-lite:org-jobs:titan:{job['id']}"
    spec = api.get(f"/v1/models/{done['fine_tuned_model']}").json()
    assert spec["id"] == done["fine_tuned_model"]
    stored = Runtime(settings).jobs.job_store.get_job(job["id"])
    assert stored is not None
    assert stored.provider_model_id == customization.output_model_arn


def test_a_failed_bedrock_customization_fails_the_job(
    api: TestClient, workers: Workers, bedrock_integration: None, bedrock_model: ModelSpec
) -> None:
    rows = [{"prompt": f"q {i}?", "completion": f" a {i}."} for i in range(12)]
    training = upload(api, jsonl(rows))
    job = api.post(JOBS, json={"model": bedrock_model.id, "training_file": training["id"]}).json()
    customization = wait_until(lambda: moto_customization(job["id"]))
    customization.status = "Failed"
    done = wait_for_status(api, job["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "failed"
    assert done["error"]["code"] == "job_failed"
    assert "Bedrock" in done["error"]["message"]


def test_bedrock_models_learn_prompt_completion_files_only(
    api: TestClient, bedrock_model: ModelSpec
) -> None:
    chat = upload(
        api,
        jsonl(
            [
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"},
                    ]
                }
            ]
            * 12
        ),
    )
    response = api.post(JOBS, json={"model": bedrock_model.id, "training_file": chat["id"]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_file_format"


def test_cancelling_a_bedrock_job_stops_the_customization(
    api: TestClient, workers: Workers, bedrock_integration: None, bedrock_model: ModelSpec
) -> None:
    rows = [{"prompt": f"q {i}?", "completion": f" a {i}."} for i in range(12)]
    training = upload(api, jsonl(rows))
    job = api.post(JOBS, json={"model": bedrock_model.id, "training_file": training["id"]}).json()
    customization = wait_until(lambda: moto_customization(job["id"]))
    wait_until(lambda: api.get(f"{JOBS}/{job['id']}").json()["status"] == "running")

    cancelled = api.post(f"{JOBS}/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_until(lambda: customization.status in ("Stopping", "Stopped"), timeout=30)
    assert api.get(f"{JOBS}/{job['id']}").json()["fine_tuned_model"] is None
