"""The local AWS: a moto server on loopback, the tables from `gantry.tables`, a seeded key.

DynamoDB applies each conditional write and transaction atomically. moto does not under
concurrent requests (its threaded server locks only routing, and a transaction copies
tables while other threads write them), so the server here applies one request at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gantry.config import Settings
from gantry.domain.keys import KeyRecord, hash_secret, parse_api_key, validate_scopes
from gantry.tables import TABLES, TableSpec

LOCAL_ORG = "org-local"

# A documented example key for the sample events and local invocations. Never valid in AWS:
# deployed functions hash with their own pepper.
EXAMPLE_API_KEY = "gnt_example01_LocalDevelopmentOnlySecret0123456789"


class Serialized:
    """A WSGI app that handles one request at a time."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        with self.lock:
            return list(self.app(environ, start_response))


def serialize(server: Any) -> None:
    """Make a started ThreadedMotoServer apply one request at a time."""
    wsgi = server._server
    if not isinstance(wsgi.app, Serialized):
        wsgi.app = Serialized(wsgi.app)


@dataclass
class LocalAws:
    endpoint_url: str
    server: Any

    def stop(self) -> None:
        self.server.stop()


def use_fake_credentials() -> None:
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)


def start_moto_server(host: str = "127.0.0.1", port: int = 0) -> LocalAws:
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import BaseWSGIServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    use_fake_credentials()
    # Accept bursts of hundreds of connections (tests race 300 threads) instead of
    # refusing those beyond werkzeug's default backlog of 128.
    BaseWSGIServer.request_queue_size = 1024
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    serialize(server)
    bound_host, port = server.get_host_and_port()
    return LocalAws(endpoint_url=f"http://{bound_host}:{port}", server=server)


def _definition(spec: TableSpec, name: str) -> dict[str, Any]:
    attributes = {spec.partition_key}
    schema = [{"AttributeName": spec.partition_key, "KeyType": "HASH"}]
    if spec.sort_key:
        attributes.add(spec.sort_key)
        schema.append({"AttributeName": spec.sort_key, "KeyType": "RANGE"})
    indexes = []
    for index in spec.indexes:
        key_schema = [{"AttributeName": index.partition_key, "KeyType": "HASH"}]
        attributes.add(index.partition_key)
        if index.sort_key:
            attributes.add(index.sort_key)
            key_schema.append({"AttributeName": index.sort_key, "KeyType": "RANGE"})
        indexes.append(
            {
                "IndexName": index.name,
                "KeySchema": key_schema,
                "Projection": {"ProjectionType": "ALL"},
            }
        )
    definition: dict[str, Any] = {
        "TableName": name,
        "KeySchema": schema,
        "AttributeDefinitions": [
            {"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if indexes:
        definition["GlobalSecondaryIndexes"] = indexes
    return definition


def create_tables(dynamodb: Any, settings: Settings) -> None:
    existing = set(dynamodb.list_tables()["TableNames"])
    for spec in TABLES:
        name = getattr(settings, spec.settings_field)
        if name in existing:
            continue
        dynamodb.create_table(**_definition(spec, name))
        if spec.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
            )


def key_record(
    full_key: str,
    pepper: bytes,
    *,
    org_id: str = LOCAL_ORG,
    scopes: tuple[str, ...] = ("admin:full",),
    name: str = "local admin",
    created_by: str = "local-bootstrap",
) -> KeyRecord:
    parts = parse_api_key(full_key)
    if parts is None:
        raise ValueError(
            "An API key must look like gnt_<key_id>_<secret>: key_id 4-40 letters or digits, "
            "secret 16-256 letters, digits or '-'."
        )
    key_id, secret = parts
    return KeyRecord(
        key_id=key_id,
        org_id=org_id,
        secret_hmac=hash_secret(pepper, secret),
        scopes=validate_scopes(scopes),
        name=name,
        created_at=time.time(),
        created_by=created_by,
    )
