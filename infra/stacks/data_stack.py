"""Stateful resources: DynamoDB tables and the API key pepper. Everything here is retained."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.constructs.buckets import FilesBucket
from infra.constructs.secrets import KeyPepper
from infra.constructs.tables import GantryTables


class DataStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.tables = GantryTables(self, "Tables")
        self.pepper = KeyPepper(self, "KeyPepper")
        self.files = FilesBucket(self, "Files")

        for name, table in self.tables.tables.items():
            CfnOutput(
                self,
                f"{name.capitalize()}TableName",
                value=table.table_name,
                description=f"DynamoDB table '{name}' ({self.tables.specs[name].env_var})",
            )
        CfnOutput(
            self,
            "FilesBucketName",
            value=self.files.bucket.bucket_name,
            description="S3 bucket for files and fine-tuning artifacts (GANTRY_FILES_BUCKET)",
        )
        CfnOutput(
            self,
            "KeyPepperSecretArn",
            value=self.pepper.secret.secret_arn,
            description="Secrets Manager secret holding the API key pepper",
        )
