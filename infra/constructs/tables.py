"""DynamoDB tables, one per `gantry.tables.TABLES` entry (the shapes the local runtime uses too)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from gantry.tables import TABLES, TableSpec


def _string_key(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)


def _construct_id(spec: TableSpec) -> str:
    return "".join(part.capitalize() for part in spec.logical_name.split("_")) + "Table"


class GantryTables(Construct):
    """On-demand, point-in-time-recoverable, encrypted tables that outlive the stack."""

    def __init__(
        self, scope: Construct, construct_id: str, *, specs: Iterable[TableSpec] = TABLES
    ) -> None:
        super().__init__(scope, construct_id)
        self.specs: dict[str, TableSpec] = {}
        self.tables: dict[str, dynamodb.Table] = {}
        for spec in specs:
            table = dynamodb.Table(
                self,
                _construct_id(spec),
                partition_key=_string_key(spec.partition_key),
                sort_key=_string_key(spec.sort_key) if spec.sort_key else None,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=dynamodb.TableEncryption.AWS_MANAGED,
                time_to_live_attribute=spec.ttl_attribute,
                removal_policy=RemovalPolicy.RETAIN,
            )
            for index in spec.indexes:
                table.add_global_secondary_index(
                    index_name=index.name,
                    partition_key=_string_key(index.partition_key),
                    sort_key=_string_key(index.sort_key) if index.sort_key else None,
                    projection_type=dynamodb.ProjectionType.ALL,
                )
            self.specs[spec.logical_name] = spec
            self.tables[spec.logical_name] = table

    def table(self, logical_name: str) -> dynamodb.Table:
        return self.tables[logical_name]

    @property
    def names(self) -> Mapping[str, str]:
        """Logical name -> physical table name (a token until deployment)."""
        return {name: table.table_name for name, table in self.tables.items()}
