"""Data stack: one DynamoDB table per `gantry.tables.TABLES` entry, and the key pepper."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import CfnResource

from gantry.tables import TABLES, TableSpec
from tests.infra.support import GantryApp


def _table(stacks: GantryApp, spec: TableSpec) -> dict[str, Any]:
    construct = stacks.data.tables.table(spec.logical_name).node.default_child
    assert isinstance(construct, CfnResource)
    logical_id = stacks.data.get_logical_id(construct)
    resource: dict[str, Any] = stacks.data_resources("AWS::DynamoDB::Table")[logical_id]
    return resource


def _key_schema(partition_key: str, sort_key: str | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": partition_key, "KeyType": "HASH"}]
    if sort_key:
        schema.append({"AttributeName": sort_key, "KeyType": "RANGE"})
    return schema


def test_one_table_per_spec(stacks: GantryApp) -> None:
    assert len(stacks.data_resources("AWS::DynamoDB::Table")) == len(TABLES)
    assert set(stacks.data.tables.tables) == {spec.logical_name for spec in TABLES}


@pytest.mark.parametrize("spec", TABLES, ids=lambda spec: spec.logical_name)
def test_table_shape(stacks: GantryApp, spec: TableSpec) -> None:
    resource = _table(stacks, spec)
    props = resource["Properties"]

    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert resource["DeletionPolicy"] == "Retain"
    assert resource["UpdateReplacePolicy"] == "Retain"
    assert props["KeySchema"] == _key_schema(spec.partition_key, spec.sort_key)
    assert "TableName" not in props  # CloudFormation names them: several deployments coexist

    if spec.ttl_attribute:
        assert props["TimeToLiveSpecification"] == {
            "AttributeName": spec.ttl_attribute,
            "Enabled": True,
        }
    else:
        assert "TimeToLiveSpecification" not in props

    indexes = {index["IndexName"]: index for index in props.get("GlobalSecondaryIndexes", [])}
    assert set(indexes) == {index.name for index in spec.indexes}
    for index in spec.indexes:
        assert indexes[index.name]["KeySchema"] == _key_schema(index.partition_key, index.sort_key)
        assert indexes[index.name]["Projection"] == {"ProjectionType": "ALL"}

    key_attributes = {spec.partition_key, spec.sort_key}
    for index in spec.indexes:
        key_attributes |= {index.partition_key, index.sort_key}
    key_attributes.discard(None)
    assert {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]} == {
        name: "S" for name in key_attributes
    }


def test_table_names_are_outputs(stacks: GantryApp) -> None:
    outputs = stacks.data_template.find_outputs("*")
    for spec in TABLES:
        name = f"{spec.logical_name.capitalize()}TableName"
        assert name in outputs, name
        assert spec.env_var in outputs[name]["Description"]


def test_pepper_secret(stacks: GantryApp) -> None:
    secrets = stacks.data_resources("AWS::SecretsManager::Secret")
    assert len(secrets) == 1
    (secret,) = secrets.values()
    assert secret["Properties"]["GenerateSecretString"] == {
        "ExcludePunctuation": True,
        "IncludeSpace": False,
        "PasswordLength": 48,
    }
    assert secret["DeletionPolicy"] == "Retain"
    assert "KeyPepperSecretArn" in stacks.data_template.find_outputs("*")
