"""Operator changes to organizations: create one, change its tier or its limit overrides."""

from __future__ import annotations

import re
from dataclasses import replace

from gantry.domain.errors import Conflict, InvalidRequest, NotFound
from gantry.domain.orgs import TIERS, Limits, Organization
from gantry.ports import Clock, KeyStore

ORG_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")


class OrganizationManager:
    """Tiers set an organization's default limits; its overrides replace them."""

    def __init__(self, store: KeyStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def get(self, org_id: str) -> Organization:
        org = self._store.get_org(org_id) if ORG_ID_PATTERN.match(org_id) else None
        if org is None:
            raise NotFound(f"No organization '{org_id}'.", code="not_found", param="org_id")
        return org

    def create(
        self, org_id: str, *, name: str = "", tier: str = "standard", limits: Limits | None = None
    ) -> Organization:
        validate_org_id(org_id)
        org = Organization(
            org_id,
            name=name,
            tier=_known_tier(tier),
            limits=limits or Limits(),
            created_at=self._clock.now(),
        )
        if not self._store.create_org(org):
            raise Conflict(f"The organization '{org_id}' already exists.", code="org_exists")
        return org

    def ensure(self, org_id: str) -> bool:
        """Create the organization with the standard tier unless it exists; True if created."""
        if self._store.get_org(validate_org_id(org_id)) is not None:
            return False
        org = Organization(org_id, name=org_id, created_at=self._clock.now())
        return self._store.create_org(org)

    def set_tier(self, org_id: str, tier: str) -> Organization:
        org = replace(self.get(org_id), tier=_known_tier(tier))
        self._store.put_org(org)
        return org

    def set_limits(self, org_id: str, limits: Limits) -> Organization:
        """Replace the organization's overrides (empty limits: the tier's defaults apply)."""
        org = replace(self.get(org_id), limits=limits)
        self._store.put_org(org)
        return org


def validate_org_id(org_id: str) -> str:
    if not ORG_ID_PATTERN.match(org_id):
        raise InvalidRequest(
            "An organization id is 2-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit.",
            code="invalid_value",
            param="org_id",
        )
    return org_id


def _known_tier(tier: str) -> str:
    if tier not in TIERS:
        raise InvalidRequest(
            f"Unknown tier '{tier}'. Valid tiers: {', '.join(TIERS)}.",
            code="invalid_value",
            param="tier",
        )
    return tier
