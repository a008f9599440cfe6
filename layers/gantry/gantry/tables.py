"""DynamoDB table shapes: the one definition both CDK and the local bootstrap read."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Index:
    name: str
    partition_key: str
    sort_key: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """A table by its logical name; `settings_field` names its setting in `config.Settings`."""

    logical_name: str
    partition_key: str
    sort_key: str | None = None
    ttl_attribute: str | None = None
    indexes: tuple[Index, ...] = field(default_factory=tuple)

    @property
    def settings_field(self) -> str:
        return f"{self.logical_name}_table"

    @property
    def env_var(self) -> str:
        return f"GANTRY_{self.logical_name.upper()}_TABLE"


TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "keys",
        partition_key="pk",
        sort_key="sk",
        indexes=(Index("by_org", partition_key="org_id", sort_key="pk"),),
    ),
    TableSpec("quotas", partition_key="pk", sort_key="sk", ttl_attribute="expires_at"),
    TableSpec("usage", partition_key="pk", sort_key="sk", ttl_attribute="expires_at"),
    TableSpec("conversations", partition_key="pk", sort_key="sk", ttl_attribute="expires_at"),
    TableSpec(
        "jobs",
        partition_key="pk",
        sort_key="sk",
        ttl_attribute="expires_at",
        # owner = "<org_id>#<kind>" (file, ftjob, model, hook), listed = "<ISO time>#<id>"
        indexes=(Index("by_org", partition_key="owner", sort_key="listed"),),
    ),
    TableSpec("cache", partition_key="pk", ttl_attribute="expires_at"),
    TableSpec("idempotency", partition_key="id", ttl_attribute="expiration"),
)


def table(logical_name: str) -> TableSpec:
    for spec in TABLES:
        if spec.logical_name == logical_name:
            return spec
    raise KeyError(logical_name)
