"""The server-side pepper for API key HMACs."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.constants import PEPPER_LENGTH
from infra.nag import acknowledge


class KeyPepper(Construct):
    """A generated secret; functions read it once per process via GANTRY_KEY_PEPPER_SECRET_ARN."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description="Gantry API key pepper: HMAC-SHA256 key for stored API key hashes",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=PEPPER_LENGTH,
                exclude_punctuation=True,
                include_space=False,
            ),
            # Losing the pepper invalidates every issued API key.
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.secret,
            "AwsSolutions-SMG4",
            "The pepper keys the HMAC of every stored API key: rotating it would invalidate all "
            "issued keys at once. Keys are rotated individually through POST /v1/keys/{id}/rotate "
            "instead.",
        )
