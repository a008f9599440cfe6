"""boto3 clients, built once per process and only when first needed."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

from gantry.config import Settings

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str], Any] = {}


def client(service: str, settings: Settings) -> Any:
    key = (service, settings.aws_endpoint_url, settings.region)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        if key not in _clients:
            session = boto3.session.Session()
            in_aws = settings.env == "aws"
            _clients[key] = session.client(
                service,  # type: ignore[call-overload]
                region_name=settings.region,
                endpoint_url=settings.aws_endpoint_url,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 3 if in_aws else 10},
                    connect_timeout=2,
                    # The local emulator applies one request at a time, so under load a
                    # call may queue behind hundreds of others; DynamoDB answers in ms.
                    read_timeout=5 if in_aws else 120,
                    tcp_keepalive=True,
                    max_pool_connections=64,
                    # Presigned S3 URLs (large downloads) use SigV4 on the regional
                    # virtual-hosted endpoint, which every region accepts; a local
                    # endpoint keeps path-style URLs.
                    signature_version="s3v4" if service == "s3" else None,
                    s3=(
                        {"addressing_style": "virtual"}
                        if service == "s3" and settings.aws_endpoint_url is None
                        else None
                    ),
                ),
            )
        return _clients[key]


def reset_clients() -> None:
    with _lock:
        _clients.clear()


def read_secret(secret_arn: str, settings: Settings) -> str:
    value = client("secretsmanager", settings).get_secret_value(SecretId=secret_arn)
    return str(value["SecretString"])
