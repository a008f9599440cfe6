"""The `files` bucket: uploads, fine-tuning artifacts and result files."""

from __future__ import annotations

from aws_cdk import Duration, Fn, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constants import FILES_BUCKET_NAME
from infra.nag import acknowledge


class FilesBucket(Construct):
    """Encrypted, private, TLS-only and retained; old object versions expire after 30 days."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=Fn.sub(FILES_BUCKET_NAME),
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(noncurrent_version_expiration=Duration.days(30)),
                s3.LifecycleRule(abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
        )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "Every access goes through the Gantry functions, which log each request with its "
            "request id, key id and organization (downloads over 150 MB through a five-minute "
            "presigned URL the files function issues and logs); S3 server access logs would "
            "duplicate that trail in a second bucket.",
        )
