"""Operator commands on keys and organizations, straight against the keys table with the
operator's AWS credentials (or moto locally), through the same domain service as the API.

Settings come from the environment: GANTRY_KEYS_TABLE, GANTRY_AWS_ENDPOINT_URL (moto),
GANTRY_KEY_PEPPER or GANTRY_KEY_PEPPER_SECRET_ARN.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gantry.domain.key_management import Actor, KeyManager
from gantry.domain.org_management import OrganizationManager, validate_org_id
from gantry.domain.orgs import Limits, Organization
from gantry.http.schemas.keys import api_key_object, issued_key_object
from gantry.runtime import Runtime


def _runtime() -> Runtime:
    return Runtime()


def _print(body: dict[str, Any]) -> None:
    print(json.dumps(body, indent=2))


def _limits(raw: str | None) -> Limits | None:
    if raw is None:
        return None
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("--limits must be a JSON object, e.g. '{\"requests_per_minute\": 60}'")
    return Limits.from_dict(value)


def _scopes(raw: str) -> list[str]:
    return [scope.strip() for scope in raw.split(",") if scope.strip()]


def org_object(org: Organization) -> dict[str, Any]:
    return {
        "id": org.org_id,
        "object": "organization",
        "name": org.name,
        "tier": org.tier,
        "limits": {k: v for k, v in org.limits.as_dict().items() if v is not None},
        "effective_limits": org.effective_limits().as_dict(),
        "created_at": int(org.created_at),
    }


def keys_create(args: argparse.Namespace) -> int:
    rt = _runtime()
    # A key whose organization has no record gets the standard tier's limits, so the key
    # is checked first and the organization materialised only once the key exists.
    issued = KeyManager(rt.key_store, rt.pepper, rt.clock).create(
        Actor.operator(validate_org_id(args.org), args.created_by),
        name=args.name,
        scopes=_scopes(args.scopes),
        expires_at=args.expires_at,
        limits=_limits(args.limits),
    )
    if OrganizationManager(rt.key_store, rt.clock).ensure(args.org):
        print(f"Created organization {args.org} (tier standard).", file=sys.stderr)
    _print(issued_key_object(issued, rt.clock.now()))
    print("Store this key now: it is shown only once.", file=sys.stderr)
    return 0


def keys_list(args: argparse.Namespace) -> int:
    rt = _runtime()
    actor = Actor.operator(args.org, "operator")
    page = KeyManager(rt.key_store, rt.pepper, rt.clock).list_keys(
        actor, limit=args.limit, after=args.after
    )
    now = rt.clock.now()
    data = [api_key_object(record, now) for record in page.keys]
    _print({"object": "list", "data": data, "has_more": page.has_more})
    return 0


def _key_actor(rt: Runtime, key_id: str, name: str) -> Actor:
    """The operator acts in the key's own organization."""
    record = rt.key_store.get_key(key_id)
    return Actor.operator(record.org_id if record else "", name)


def keys_revoke(args: argparse.Namespace) -> int:
    rt = _runtime()
    actor = _key_actor(rt, args.key_id, args.created_by)
    record = KeyManager(rt.key_store, rt.pepper, rt.clock).revoke(actor, args.key_id)
    _print(api_key_object(record, rt.clock.now()))
    return 0


def keys_rotate(args: argparse.Namespace) -> int:
    rt = _runtime()
    actor = _key_actor(rt, args.key_id, args.created_by)
    issued = KeyManager(rt.key_store, rt.pepper, rt.clock).rotate(
        actor, args.key_id, args.grace_seconds
    )
    _print(issued_key_object(issued, rt.clock.now()))
    print("Store this key now: it is shown only once.", file=sys.stderr)
    return 0


def orgs_create(args: argparse.Namespace) -> int:
    rt = _runtime()
    org = OrganizationManager(rt.key_store, rt.clock).create(
        args.org, name=args.name or args.org, tier=args.tier, limits=_limits(args.limits)
    )
    _print(org_object(org))
    return 0


def orgs_set_tier(args: argparse.Namespace) -> int:
    rt = _runtime()
    _print(org_object(OrganizationManager(rt.key_store, rt.clock).set_tier(args.org, args.tier)))
    return 0


def orgs_set_limits(args: argparse.Namespace) -> int:
    rt = _runtime()
    limits = _limits(args.limits) or Limits()
    _print(org_object(OrganizationManager(rt.key_store, rt.clock).set_limits(args.org, limits)))
    return 0
