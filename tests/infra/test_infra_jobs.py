"""Files, fine-tuning and webhooks in CDK: the state machine is the ASL file, the queues
dead-letter, the workers consume them, and each role does only its part."""

from __future__ import annotations

import json
from typing import Any

from gantry.domain.webhooks import DEFAULT_RETRY_SCHEDULE
from infra.constructs.workflows import ASL_PATH
from tests.infra.support import GantryApp, as_list, logical_id, role_statements


def _one(resources: dict[str, Any], contains: str) -> dict[str, Any]:
    found = [r for logical_id, r in resources.items() if contains in logical_id]
    assert len(found) == 1, (contains, list(resources))
    return found[0]


def test_the_state_machine_is_the_asl_file(stacks: GantryApp) -> None:
    machine = _one(stacks.api_resources("AWS::StepFunctions::StateMachine"), "FineTuning")
    props = machine["Properties"]
    definition = props["DefinitionString"]
    text = definition if isinstance(definition, str) else json.dumps(definition)
    deployed = json.loads(text)
    assert json.loads(ASL_PATH.read_text())["States"].keys() <= set(deployed["States"])
    assert deployed["TimeoutSeconds"] == 7 * 86_400  # no execution outlives its job's items
    assert set(props["DefinitionSubstitutions"]) == {
        "TrainingQueueUrl",
        "WebhookQueueUrl",
        "JobsTable",
        "BedrockRoleArn",
    }
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"


def test_queues_dead_letter_after_their_tries(stacks: GantryApp) -> None:
    queues = stacks.api_resources("AWS::SQS::Queue")
    webhooks = _one(queues, "JobsWebhooksQueue")["Properties"]
    assert webhooks["RedrivePolicy"]["maxReceiveCount"] == len(DEFAULT_RETRY_SCHEDULE)
    assert webhooks["MessageRetentionPeriod"] > sum(DEFAULT_RETRY_SCHEDULE)
    training = _one(queues, "JobsTrainingQueue")["Properties"]
    assert training["RedrivePolicy"]["maxReceiveCount"] >= 2
    for queue in queues.values():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True


def test_workers_consume_their_queues_with_partial_batch_failures(stacks: GantryApp) -> None:
    mappings = list(stacks.api_resources("AWS::Lambda::EventSourceMapping").values())
    assert len(mappings) == 4  # training, webhooks, batches, settlements
    for mapping in mappings:
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    rules = stacks.api_resources("AWS::Events::Rule")
    relay = _one(rules, "QuotaEventRelay")["Properties"]
    assert relay["ScheduleExpression"] == "rate(1 minute)"


def _policy_statements(stacks: GantryApp, role_fragment: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy_id, policy in stacks.api_resources("AWS::IAM::Policy").items():
        if role_fragment in policy_id:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_the_state_machine_role_does_what_its_states_do(stacks: GantryApp) -> None:
    statements = _policy_statements(stacks, "JobsFineTuningRoleDefaultPolicy")
    by_action: dict[str, list[Any]] = {}
    for statement in statements:
        actions = statement["Action"]
        for action in actions if isinstance(actions, list) else [actions]:
            by_action.setdefault(action, []).append(statement["Resource"])
    assert "sqs:SendMessage" in by_action
    resources = [
        state.get("Resource", "") for state in json.loads(ASL_PATH.read_text())["States"].values()
    ]
    used = {
        "dynamodb:" + r.rsplit(":", 1)[1][0].upper() + r.rsplit(":", 1)[1][1:]
        for r in resources
        if r.startswith("arn:aws:states:::dynamodb:")
    }
    assert used == {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem"}
    assert {a for a in by_action if a.startswith("dynamodb:")} == used
    assert not any(action.startswith("dynamodb:Delete") for action in by_action)
    assert "bedrock:CreateModelCustomizationJob" in by_action
    assert "iam:PassRole" in by_action
    assert "Tables" in json.dumps(by_action["dynamodb:PutItem"])


def test_the_files_bucket_is_private_encrypted_and_tls_only(stacks: GantryApp) -> None:
    (bucket,) = stacks.data_resources("AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert bucket["DeletionPolicy"] == "Retain"
    (policy,) = stacks.data_resources("AWS::S3::BucketPolicy").values()
    assert "aws:SecureTransport" in json.dumps(policy)


def test_serving_functions_read_artifacts_only(stacks: GantryApp) -> None:
    for family in ("Inference", "Models"):
        statements = _policy_statements(stacks, f"{family}RoleDefaultPolicy")
        s3 = [s for s in statements if "s3:" in json.dumps(s["Action"])]
        assert s3 and all(s["Action"] == "s3:GetObject" for s in s3)
        assert all("fine-tuning/*" in json.dumps(s["Resource"]) for s in s3)


def test_every_dead_letter_queue_raises_an_alarm(stacks: GantryApp) -> None:
    queues = stacks.api_resources("AWS::SQS::Queue")
    dead_letters = {logical_id for logical_id in queues if "DeadLetters" in logical_id}
    alarms = stacks.api_resources("AWS::CloudWatch::Alarm").values()
    watched = {
        dimension["Value"]["Fn::GetAtt"][0]
        for alarm in alarms
        for dimension in alarm["Properties"].get("Dimensions", [])
        if dimension["Name"] == "QueueName"
    }
    assert dead_letters and watched == dead_letters
    for alarm in alarms:
        props = alarm["Properties"]
        if props.get("Namespace") == "AWS/SQS":
            assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
            assert props["Threshold"] == 1
            assert props["TreatMissingData"] == "notBreaching"


def test_the_training_worker_may_continue_on_its_own_queue(stacks: GantryApp) -> None:
    """Training that would outlive an invocation sends its step again to the training
    queue: the worker consumes that queue and may send to it, and to no other."""
    jobs = stacks.api.jobs
    statements = role_statements(stacks, jobs.training_worker.role)
    queue = {"Fn::GetAtt": [logical_id(jobs.training.queue), "Arn"]}
    sends = [s for s in statements if "sqs:SendMessage" in as_list(s["Action"])]
    assert [s["Resource"] for s in sends] == [queue]
    receives = [s for s in statements if "sqs:ReceiveMessage" in as_list(s["Action"])]
    assert [s["Resource"] for s in receives] == [queue]
