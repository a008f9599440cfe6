"""Batches in CDK: the state machine is the ASL file, the batch queue dead-letters, the
worker consumes it one message at a time behind a small concurrency limit, and each role
does only its part."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from gantry.domain.batch_service import BatchSettings
from infra.app import build_app
from infra.constructs.batches import (
    BATCH_ROUTES,
    DEFAULT_WORKER_CONCURRENCY,
    LINE_BUDGET_SECONDS,
    WORKER_CONCURRENCY_CONTEXT,
    worker_concurrency,
)
from infra.constructs.workflows import BATCH_ASL_PATH, MAX_BATCH_DURATION
from tests.infra.support import (
    SKIP_BUNDLING,
    TABLE_REFERENCE,
    GantryApp,
    actions,
    as_list,
    logical_id,
    resource,
    role_statements,
    table_access,
)

# What each Step Functions service integration in the ASL needs from the role.
INTEGRATION_ACTIONS = {
    "arn:aws:states:::sqs:sendMessage": "sqs:SendMessage",
    "arn:aws:states:::sqs:sendMessage.waitForTaskToken": "sqs:SendMessage",
    "arn:aws:states:::dynamodb:updateItem": "dynamodb:UpdateItem",
    "arn:aws:states:::dynamodb:putItem": "dynamodb:PutItem",
}
# Step Functions log delivery and X-Ray support no resource-level permissions.
UNSCOPED_ACTIONS = {
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
# A line runs as the key that created the batch: its key is read, never written.
WORKER_TABLES = {
    "keys": "read",
    "quotas": "rw",
    "usage": "rw",
    "cache": "rw",
    "jobs": "rw",
}
_OBJECTS = re.compile(r"gantry-files-\$\{AWS::AccountId\}-\$\{AWS::Region\}\"\}, \"/([a-z-]+/)\*\"")


def _object_grants(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Files bucket prefix -> the S3 actions granted under it."""
    grants: dict[str, set[str]] = {}
    for statement in statements:
        granted = actions([statement], "s3:")
        if not granted:
            continue
        prefixes = _OBJECTS.findall(json.dumps(statement["Resource"]))
        assert len(prefixes) == len(as_list(statement["Resource"])), statement["Resource"]
        for prefix in prefixes:
            grants.setdefault(prefix, set()).update(granted)
    return grants


def _states(states: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every state, including those inside Map and Parallel states."""
    for state in states.values():
        yield state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from _states(processor["States"])
        for branch in state.get("Branches", []):
            yield from _states(branch["States"])


def _asl() -> dict[str, Any]:
    definition: dict[str, Any] = json.loads(BATCH_ASL_PATH.read_text())
    return definition


# The state machine


def test_the_state_machine_is_the_asl_file(stacks: GantryApp) -> None:
    props = resource(stacks, stacks.api.batches.workflow.state_machine)["Properties"]
    deployed = json.loads(props["DefinitionString"])
    assert {k: v for k, v in deployed.items() if k != "TimeoutSeconds"} == _asl()
    placeholders = set(re.findall(r"\$\{(\w+)\}", BATCH_ASL_PATH.read_text()))
    assert placeholders == set(props["DefinitionSubstitutions"])
    assert placeholders == {"BatchQueueUrl", "WebhookQueueUrl", "JobsTable"}
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"


def test_no_execution_outlives_the_window_and_finalization(stacks: GantryApp) -> None:
    props = resource(stacks, stacks.api.batches.workflow.state_machine)["Properties"]
    timeout = json.loads(props["DefinitionString"])["TimeoutSeconds"]
    assert timeout == MAX_BATCH_DURATION.to_seconds() == 26 * 3600


def test_the_substitutions_name_the_batch_queue_webhook_queue_and_jobs_table(
    stacks: GantryApp,
) -> None:
    props = resource(stacks, stacks.api.batches.workflow.state_machine)["Properties"]
    substitutions = props["DefinitionSubstitutions"]
    assert substitutions["BatchQueueUrl"] == {"Ref": logical_id(stacks.api.batches.queue.queue)}
    assert substitutions["WebhookQueueUrl"] == {
        "Ref": logical_id(stacks.api.jobs.webhook_queue.queue)
    }
    assert "TablesJobsTable" in json.dumps(substitutions["JobsTable"])


def test_the_state_machine_role_does_exactly_what_its_states_do(stacks: GantryApp) -> None:
    states = list(_states(_asl()["States"]))
    assert all(
        s.get("ItemProcessor", {}).get("ProcessorConfig", {}).get("Mode", "INLINE") == "INLINE"
        for s in states
        if s["Type"] == "Map"
    ), "a distributed Map needs states:StartExecution on its own child executions"
    needed = {INTEGRATION_ACTIONS[s["Resource"]] for s in states if s["Type"] == "Task"}

    statements = role_statements(stacks, stacks.api.batches.workflow.role)
    scoped = [s for s in statements if s["Resource"] != "*"]
    assert actions(scoped) == needed
    for statement in statements:
        if statement["Resource"] == "*":
            assert set(as_list(statement["Action"])) <= UNSCOPED_ACTIONS
    queues = {
        logical_id(stacks.api.batches.queue.queue),
        logical_id(stacks.api.jobs.webhook_queue.queue),
    }
    for statement in scoped:
        resources = json.dumps(statement["Resource"])
        if "sqs:SendMessage" in as_list(statement["Action"]):
            assert {q for q in queues if q in resources} == queues
            assert len(as_list(statement["Resource"])) == 2
        else:
            assert TABLE_REFERENCE.findall(resources) == ["Jobs"]


# The queue and the worker


def test_the_batch_queue_dead_letters_and_outwaits_the_worker(stacks: GantryApp) -> None:
    batches = stacks.api.batches
    queue = resource(stacks, batches.queue.queue)["Properties"]
    worker = resource(stacks, batches.worker.function)["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [logical_id(batches.queue.dead_letters), "Arn"]},
        "maxReceiveCount": 5,
    }
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]
    assert queue["MessageRetentionPeriod"] >= MAX_BATCH_DURATION.to_seconds()
    assert queue["SqsManagedSseEnabled"] is True
    dead_letters = resource(stacks, batches.queue.dead_letters)["Properties"]
    assert dead_letters["MessageRetentionPeriod"] == 14 * 86_400


def test_the_worker_takes_one_message_at_a_time_behind_a_concurrency_limit(
    stacks: GantryApp,
) -> None:
    batches = stacks.api.batches
    worker_id = logical_id(batches.worker.function)
    (mapping,) = [
        m["Properties"]
        for m in stacks.api_resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": worker_id}
    ]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [logical_id(batches.queue.queue), "Arn"]}
    assert mapping["BatchSize"] == 1
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": DEFAULT_WORKER_CONCURRENCY}

    worker = resource(stacks, batches.worker.function)["Properties"]
    assert worker["ReservedConcurrentExecutions"] == DEFAULT_WORKER_CONCURRENCY
    assert worker["Timeout"] == 900
    assert worker["Handler"] == "handler.handler"
    inference = resource(stacks, stacks.api.inference.function)["Properties"]
    assert worker["MemorySize"] == inference["MemorySize"]
    # No other function is limited: interactive traffic keeps the account's concurrency.
    limited = [
        logical_id
        for logical_id, f in stacks.api_resources("AWS::Lambda::Function").items()
        if "ReservedConcurrentExecutions" in f["Properties"]
    ]
    assert limited == [worker_id]


def test_the_worker_concurrency_comes_from_context() -> None:
    _, _, api = build_app({**SKIP_BUNDLING, WORKER_CONCURRENCY_CONTEXT: "5"}, nag=False)
    template = Template.from_stack(api)
    worker_id = logical_id(api.batches.worker.function)
    worker = template.find_resources("AWS::Lambda::Function")[worker_id]["Properties"]
    assert worker["ReservedConcurrentExecutions"] == 5
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"FunctionName": {"Ref": worker_id}, "ScalingConfig": {"MaximumConcurrency": 5}},
    )


@pytest.mark.parametrize(("value", "expected"), [(None, 2), (2, 2), ("8", 8), (" 1000 ", 1000)])
def test_worker_concurrency_values(value: object, expected: int) -> None:
    assert worker_concurrency(value) == expected


@pytest.mark.parametrize("value", [0, 1, "1", 1001, -2, "two", 2.5, True, ""])
def test_worker_concurrency_refuses_what_sqs_would(value: object) -> None:
    with pytest.raises(ValueError, match=WORKER_CONCURRENCY_CONTEXT):
        worker_concurrency(value)


# The functions' environment


@pytest.mark.parametrize("function", ["api_function", "worker"])
def test_both_functions_know_the_queue_machine_bucket_and_webhooks(
    stacks: GantryApp, function: str
) -> None:
    batches = stacks.api.batches
    service = getattr(batches, function)
    env = resource(stacks, service.function)["Properties"]["Environment"]["Variables"]
    assert env["GANTRY_BATCH_QUEUE_URL"] == {"Ref": logical_id(batches.queue.queue)}
    assert env["GANTRY_BATCH_STATE_MACHINE_ARN"] == {
        "Ref": logical_id(batches.workflow.state_machine)
    }
    fine_tuning = resource(stacks, stacks.api.jobs.fine_tuning.function)["Properties"]
    for name, value in fine_tuning["Environment"]["Variables"].items():
        assert env[name] == value, name


def test_the_worker_gets_a_request_budget_inside_its_timeout(stacks: GantryApp) -> None:
    worker = resource(stacks, stacks.api.batches.worker.function)["Properties"]
    budget = int(worker["Environment"]["Variables"]["GANTRY_REQUEST_TIMEOUT_SECONDS"])
    assert budget == LINE_BUDGET_SECONDS
    margin = BatchSettings(line_seconds=budget).continue_margin_seconds
    assert budget < margin <= worker["Timeout"] - 600  # ten minutes of lines per message


# Least privilege


@pytest.mark.parametrize("role", ["api_function", "worker", "workflow"])
def test_no_wildcard_actions(stacks: GantryApp, role: str) -> None:
    statements = role_statements(stacks, getattr(stacks.api.batches, role).role)
    for action in actions(statements):
        assert "*" not in action, action


def test_the_api_function_reaches_its_tables_objects_and_machine(stacks: GantryApp) -> None:
    batches = stacks.api.batches
    statements = role_statements(stacks, batches.api_function.role)
    assert table_access(statements) == {"keys": "rw", "jobs": "rw", "idempotency": "rw"}
    assert _object_grants(statements) == {}
    assert not actions(statements, "s3:")
    machine = {"Ref": logical_id(batches.workflow.state_machine)}
    states = [s for s in statements if actions([s], "states:")]
    assert [(s["Action"], s["Resource"]) for s in states] == [("states:StartExecution", machine)]
    assert not actions(statements, "sqs:")
    assert not actions(statements, "bedrock:")


def test_the_worker_runs_lines_and_answers_its_tasks(stacks: GantryApp) -> None:
    batches = stacks.api.batches
    statements = role_statements(stacks, batches.worker.role)
    assert table_access(statements) == WORKER_TABLES
    assert _object_grants(statements) == {
        "files/": {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"},
        "batches/": {"s3:GetObject", "s3:PutObject"},
        "fine-tuning/": {"s3:GetObject"},  # fine-tuned models a line may name
    }
    machine = {"Ref": logical_id(batches.workflow.state_machine)}
    states = [s for s in statements if actions([s], "states:")]
    assert len(states) == 1 and states[0]["Resource"] == machine
    assert actions(states) == {
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "states:SendTaskHeartbeat",
    }
    sends = [s for s in statements if "sqs:SendMessage" in as_list(s["Action"])]
    assert sorted(json.dumps(s["Resource"]) for s in sends) == sorted(
        json.dumps({"Fn::GetAtt": [logical_id(queue), "Arn"]})
        for queue in (
            batches.queue.queue,  # continuations of long chunks
            stacks.api.settlements.queue.queue,  # settlements a line could not write
        )
    )
    consumes = [s for s in statements if "sqs:ReceiveMessage" in as_list(s["Action"])]
    assert [s["Resource"] for s in consumes] == [
        {"Fn::GetAtt": [logical_id(batches.queue.queue), "Arn"]}
    ]
    assert not actions(statements, "iam:")


def test_batches_pass_cdk_nag(stacks: GantryApp) -> None:
    report = AwsSolutionsChecks(stacks.app).validate_scope(stacks.api.batches)
    assert report.success, [v.rule_name for v in report.violations]


def test_the_routes_go_to_the_batches_function(stacks: GantryApp) -> None:
    function = stacks.api.batches.api_function.function
    assert stacks.api.batches.routes == [(m, p, function) for m, p in BATCH_ROUTES]
