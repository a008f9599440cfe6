"""cdk-nag wiring: the AWS Solutions rule pack and reasoned acknowledgements."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stage, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

MIN_REASON_LENGTH = 40


def add_nag_checks(scope: Stage) -> None:
    """Run the AWS Solutions checks at synth; unacknowledged errors fail the synth."""
    Validations.of(scope).add_plugins(AwsSolutionsChecks(scope))


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one finding, `AwsSolutions-X1` or `AwsSolutions-X1[Finding]`, with why.

    Covers the construct and everything under it. The bare rule id (as in cdk-nag's own
    documentation) is honoured both by synthesis and by `NagPack.validate_scope`.
    """
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"acknowledging {rule_id} needs a specific reason")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))
