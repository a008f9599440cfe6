"""cdk-nag (AWS Solutions pack) passes, and every acknowledgement says why."""

from __future__ import annotations

import re

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import AwsSolutionsChecks

from infra.nag import acknowledge, add_nag_checks
from tests.infra.support import GantryApp

# Acknowledgements the stacks are expected to make, by rule (a new one needs a review).
EXPECTED_ACKNOWLEDGED_RULES = {
    "AwsSolutions-APIG3",
    "AwsSolutions-APIG4",
    "AwsSolutions-COG4",
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
    "service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
    "AwsSolutions-IAM5[Resource::*]",
    "AwsSolutions-L1",
    "AwsSolutions-SMG4",
    # files, fine-tuning and webhooks
    "AwsSolutions-S1",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::"
    "gantry-files-<AWS::AccountId>-<AWS::Region>/files/*]",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::"
    "gantry-files-<AWS::AccountId>-<AWS::Region>/fine-tuning/*]",
    # the same prefixes as `cdk synth` renders them, with a literal partition
    "AwsSolutions-IAM5[Resource::arn:aws:s3:::gantry-files-<AWS::AccountId>-<AWS::Region>/files/*]",
    "AwsSolutions-IAM5[Resource::arn:aws:s3:::"
    "gantry-files-<AWS::AccountId>-<AWS::Region>/fine-tuning/*]",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:"
    "execution:<AWS::StackName>-fine-tuning:*]",
    # batches: chunk results under their own prefix of the files bucket
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::"
    "gantry-files-<AWS::AccountId>-<AWS::Region>/batches/*]",
    "AwsSolutions-IAM5[Resource::arn:aws:s3:::gantry-files-<AWS::AccountId>-<AWS::Region>/batches/*]",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:<AWS::Region>:<AWS::AccountId>:"
    "model-customization-job/*]",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:<AWS::Region>::foundation-model/*]",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:<AWS::Region>:<AWS::AccountId>:"
    "custom-model/*]",
}
# CDK records an acknowledgement without a plugin prefix as an annotation rule.
_ANNOTATION_PREFIX = re.compile(r"^annotation::", re.IGNORECASE)


def _acknowledgements(app: App) -> dict[str, dict[str, str]]:
    """Construct path -> {rule id: reason}."""
    found: dict[str, dict[str, str]] = {}
    for construct in app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                by_rule = {
                    _ANNOTATION_PREFIX.sub("", rule): why for rule, why in entry.data.items()
                }
                found.setdefault(construct.node.path, {}).update(by_rule)
    return found


def test_app_has_no_unacknowledged_findings(stacks: GantryApp) -> None:
    report = AwsSolutionsChecks(stacks.app).validate_scope(stacks.app)
    findings = [
        f"{violation.rule_name}: {resource.construct_path}"
        for violation in report.violations
        for resource in violation.violating_resources
    ]
    assert report.success, findings
    assert findings == []


def test_app_synthesizes_with_the_nag_plugin(stacks: GantryApp) -> None:
    # Synthesis runs the registered plugins and raises on any unacknowledged error.
    assembly = stacks.app.synth()
    assert {stack.stack_name for stack in assembly.stacks} == {"GantryData", "GantryApi"}


def test_every_acknowledgement_has_a_specific_reason(stacks: GantryApp) -> None:
    acknowledgements = _acknowledgements(stacks.app)
    rules = {rule for by_rule in acknowledgements.values() for rule in by_rule}
    assert rules == EXPECTED_ACKNOWLEDGED_RULES
    for path, by_rule in acknowledgements.items():
        for rule, reason in by_rule.items():
            assert len(reason) >= 40, (path, rule)


def test_authorizer_acknowledgement_explains_function_auth(stacks: GantryApp) -> None:
    reasons = {
        rule: reason
        for by_rule in _acknowledgements(stacks.app).values()
        for rule, reason in by_rule.items()
    }
    for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
        assert "HMAC" in reasons[rule]


def test_nag_catches_an_unacknowledged_finding() -> None:
    """Control: the same wiring fails a secret without rotation until it is acknowledged."""
    app = App(context={"aws:cdk:bundling-stacks": []})
    stack = Stack(app, "NagControl")
    secret = secretsmanager.Secret(stack, "Secret")
    add_nag_checks(app)

    report = AwsSolutionsChecks(app).validate_scope(app)
    assert not report.success
    assert [v.rule_name for v in report.violations] == ["AwsSolutions-SMG4"]
    with pytest.raises(RuntimeError, match="AwsSolutions-SMG4"):
        app.synth()

    acknowledge(secret, "AwsSolutions-SMG4", "control case: a rotation schedule is not needed")
    assert AwsSolutionsChecks(app).validate_scope(app).success


def test_acknowledge_demands_a_reason() -> None:
    app = App()
    stack = Stack(app, "NoReason")
    with pytest.raises(ValueError, match="reason"):
        acknowledge(stack, "AwsSolutions-SMG4", "because")
