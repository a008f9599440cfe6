"""The settlement spool in CDK: the queue outlasts a DynamoDB outage before it dead-letters,
the worker replays it gently, and only the functions that meter requests may send to it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cdk_nag import AwsSolutionsChecks

from infra.constructs.service_function import TABLE_WRITE_ACTIONS, ServiceFunction
from infra.constructs.settlements import SETTLEMENT_QUEUE_ENV
from tests.infra.support import (
    TABLE_REFERENCE,
    GantryApp,
    actions,
    as_list,
    logical_id,
    resource,
    role_statements,
    table_access,
)

FOURTEEN_DAYS = 14 * 86_400
# What an SQS event source needs from the consuming function's role.
CONSUME_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
}
# The functions that admit and settle requests in their own process.
METERING = ("inference", "completions", "models", "batch_worker")


def _queue_arn(stacks: GantryApp) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id(stacks.api.settlements.queue.queue), "Arn"]}


def _metering(stacks: GantryApp) -> list[ServiceFunction]:
    return [_service(stacks, name) for name in METERING]


def _service(stacks: GantryApp, name: str) -> ServiceFunction:
    api = stacks.api
    services = {
        "inference": api.inference,
        "completions": api.completions,
        "models": api.models,
        "batch_worker": api.batches.worker,
        "settlement_worker": api.settlements.worker,
    }
    return services[name]


def _role_of_function(stacks: GantryApp) -> dict[str, str]:
    """Role logical id -> logical id of the function that runs as it."""
    roles: dict[str, str] = {}
    for function_id, function in stacks.api_resources("AWS::Lambda::Function").items():
        role = function["Properties"]["Role"]
        roles[role["Fn::GetAtt"][0]] = function_id
    return roles


# The queue


def test_the_queue_rides_out_an_outage_then_dead_letters(stacks: GantryApp) -> None:
    spool = stacks.api.settlements.queue
    queue = resource(stacks, spool.queue)["Properties"]
    worker = resource(stacks, stacks.api.settlements.worker.function)["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [logical_id(spool.dead_letters), "Arn"]},
        "maxReceiveCount": 10,
    }
    assert queue["VisibilityTimeout"] == 6 * worker["Timeout"] == 360
    # Ten receives, each after the visibility timeout: about an hour of replays.
    assert queue["RedrivePolicy"]["maxReceiveCount"] * queue["VisibilityTimeout"] >= 3600
    assert queue["MessageRetentionPeriod"] == FOURTEEN_DAYS
    assert queue["SqsManagedSseEnabled"] is True


def test_the_dead_letters_are_kept_as_long_and_nothing_consumes_them(stacks: GantryApp) -> None:
    dead_letters = stacks.api.settlements.queue.dead_letters
    props = resource(stacks, dead_letters)["Properties"]
    assert props["MessageRetentionPeriod"] == FOURTEEN_DAYS
    assert props["SqsManagedSseEnabled"] is True
    dead_letters_id = logical_id(dead_letters)
    for mapping in stacks.api_resources("AWS::Lambda::EventSourceMapping").values():
        assert dead_letters_id not in json.dumps(mapping)
    for policy in stacks.api_resources("AWS::IAM::Policy").values():
        assert dead_letters_id not in json.dumps(policy)


@pytest.mark.parametrize("queue", ["queue", "dead_letters"])
def test_the_queues_refuse_plain_http(stacks: GantryApp, queue: str) -> None:
    queue_id = logical_id(getattr(stacks.api.settlements.queue, queue))
    (policy,) = [
        p["Properties"]
        for p in stacks.api_resources("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    ]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# The worker


def test_the_worker_replays_ten_at_a_time_behind_a_concurrency_limit(stacks: GantryApp) -> None:
    settlements = stacks.api.settlements
    worker_id = logical_id(settlements.worker.function)
    (mapping,) = [
        m["Properties"]
        for m in stacks.api_resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": worker_id}
    ]
    assert mapping["EventSourceArn"] == _queue_arn(stacks)
    assert mapping["BatchSize"] == 10
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    # The queue has no other consumer.
    queue_id = logical_id(settlements.queue.queue)
    consumers = [
        m["Properties"]["FunctionName"]
        for m in stacks.api_resources("AWS::Lambda::EventSourceMapping").values()
        if queue_id in json.dumps(m["Properties"]["EventSourceArn"])
    ]
    assert consumers == [{"Ref": worker_id}]


def test_the_worker_function(stacks: GantryApp) -> None:
    worker = resource(stacks, stacks.api.settlements.worker.function)["Properties"]
    assert worker["Timeout"] == 60
    assert worker["Handler"] == "handler.handler"
    assert worker["Runtime"] == "python3.12"
    assert worker["Architectures"] == ["arm64"]
    assert worker["TracingConfig"] == {"Mode": "Active"}
    # The maximum concurrency of its event source is the limit; no concurrency is reserved.
    assert "ReservedConcurrentExecutions" not in worker
    env = worker["Environment"]["Variables"]
    assert env["GANTRY_ENV"] == "aws"
    # A replay that fails stays on the queue; the worker never spools again.
    assert SETTLEMENT_QUEUE_ENV not in env


def test_the_handler_is_the_settlements_entry_point() -> None:
    from functions.settlement_worker import handler
    from gantry.lambda_workers import settlements

    assert handler.handler is settlements


def test_the_worker_touches_only_quotas_and_usage_and_consumes_only_its_queue(
    stacks: GantryApp,
) -> None:
    statements = role_statements(stacks, stacks.api.settlements.worker.role)
    assert table_access(statements) == {"quotas": "rw", "usage": "rw"}
    queues = [s for s in statements if actions([s], "sqs:")]
    assert [s["Resource"] for s in queues] == [_queue_arn(stacks)]
    assert actions(queues) == CONSUME_ACTIONS
    assert not {
        a
        for a in actions(statements)
        if a.startswith(("s3:", "bedrock:", "states:", "iam:", "kms:", "events:", "lambda:"))
    }


# The metering functions


def test_exactly_the_metering_functions_know_the_queue(stacks: GantryApp) -> None:
    queue = {"Ref": logical_id(stacks.api.settlements.queue.queue)}
    knowing = {
        function_id
        for function_id, function in stacks.api_resources("AWS::Lambda::Function").items()
        if SETTLEMENT_QUEUE_ENV
        in function["Properties"].get("Environment", {}).get("Variables", {})
    }
    assert knowing == {logical_id(f.function) for f in _metering(stacks)}
    for service in _metering(stacks):
        env = resource(stacks, service.function)["Properties"]["Environment"]["Variables"]
        assert env[SETTLEMENT_QUEUE_ENV] == queue


def test_exactly_the_metering_functions_may_send(stacks: GantryApp) -> None:
    queue_id = logical_id(stacks.api.settlements.queue.queue)
    senders: set[str] = set()
    for policy in stacks.api_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if queue_id not in json.dumps(statement["Resource"]):
                continue
            if "sqs:SendMessage" in as_list(statement["Action"]):
                senders |= {role["Ref"] for role in policy["Properties"]["Roles"]}
    assert senders == {logical_id(f.role) for f in _metering(stacks)}

    for service in _metering(stacks):
        sends = [
            s
            for s in role_statements(stacks, service.role)
            if queue_id in json.dumps(s["Resource"])
        ]
        assert [s["Resource"] for s in sends] == [_queue_arn(stacks)]
        assert actions(sends) == {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}


def test_the_metering_functions_are_those_that_write_quotas(stacks: GantryApp) -> None:
    """A function that admits requests (it writes quotas) also settles them, so it spools:
    a new metering function without the queue fails here."""
    function_of_role = _role_of_function(stacks)
    writers: set[str] = set()
    for policy in stacks.api_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            granted = set(as_list(statement["Action"]))
            if not granted & set(TABLE_WRITE_ACTIONS):
                continue
            if "quotas" in {t.lower() for t in TABLE_REFERENCE.findall(json.dumps(statement))}:
                writers |= {function_of_role[role["Ref"]] for role in policy["Properties"]["Roles"]}
    writers.discard(logical_id(stacks.api.settlements.worker.function))
    assert writers == {logical_id(f.function) for f in _metering(stacks)}


# Least privilege and cdk-nag


@pytest.mark.parametrize("name", ["settlement_worker", *METERING])
def test_no_wildcard_actions(stacks: GantryApp, name: str) -> None:
    for action in actions(role_statements(stacks, _service(stacks, name).role)):
        assert "*" not in action, action


def test_settlements_pass_cdk_nag(stacks: GantryApp) -> None:
    report = AwsSolutionsChecks(stacks.app).validate_scope(stacks.api.settlements)
    assert report.success, [v.rule_name for v in report.violations]
