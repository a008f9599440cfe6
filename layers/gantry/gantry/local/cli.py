"""The `gantry` command: local server, local Lambda invocations, key and organization
management."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gantry.domain.errors import GantryError

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def _dev(args: argparse.Namespace) -> int:
    from gantry.local.server import serve

    serve(args.host, args.port, os.environ.get("GANTRY_DEV_API_KEY") or None)
    return 0


def _invoke(args: argparse.Namespace) -> int:
    from gantry.local.invoke import invoke

    return invoke(args.function, args.event, args.functions_dir)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="gantry", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="serve the whole API locally with moto")
    dev.add_argument("--host", default=os.environ.get("GANTRY_HOST", "127.0.0.1"))
    dev.add_argument("--port", type=int, default=int(os.environ.get("GANTRY_PORT", "8000")))
    dev.set_defaults(run=_dev)

    invoke = commands.add_parser("invoke", help="run a Lambda handler on a sample event")
    invoke.add_argument("function", help="folder name under functions/, e.g. inference")
    invoke.add_argument("event", help="path to an event JSON file, e.g. events/inference/chat.json")
    invoke.add_argument("--functions-dir", default="functions")
    invoke.set_defaults(run=_invoke)

    _key_commands(commands)
    _org_commands(commands)
    return root


def _key_commands(commands: Subcommands) -> None:
    from gantry.local import operator

    keys = commands.add_parser("keys", help="manage API keys directly in DynamoDB")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    operator_name = os.environ.get("USER", "operator")

    create = key_commands.add_parser(
        "create",
        help="create a key and print it once",
        description="Create a key and print it (with its secret) once. If the organization "
        "does not exist yet it is created with the standard tier; use `gantry orgs create` "
        "first for another tier or a display name.",
    )
    create.add_argument("--org", required=True)
    create.add_argument("--scopes", default="admin:full", help="comma-separated scopes")
    create.add_argument("--name", default="operator key")
    create.add_argument("--created-by", default=operator_name)
    create.add_argument("--expires-at", type=int, help="expiry in unix seconds")
    create.add_argument("--limits", help="JSON object, e.g. '{\"requests_per_minute\": 60}'")
    create.set_defaults(run=operator.keys_create)

    listing = key_commands.add_parser("list", help="list an organization's keys (no secrets)")
    listing.add_argument("--org", required=True)
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--after", help="key id to continue after")
    listing.set_defaults(run=operator.keys_list)

    revoke = key_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=operator.keys_revoke, created_by=operator_name)

    rotate = key_commands.add_parser(
        "rotate", help="issue a successor key; the old one stays valid for a grace period"
    )
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-seconds", type=int, default=86_400)
    rotate.add_argument("--created-by", default=operator_name)
    rotate.set_defaults(run=operator.keys_rotate)


def _org_commands(commands: Subcommands) -> None:
    from gantry.domain.orgs import TIERS
    from gantry.local import operator

    orgs = commands.add_parser("orgs", help="manage organizations directly in DynamoDB")
    org_commands = orgs.add_subparsers(dest="orgs_command", required=True)

    create = org_commands.add_parser("create", help="create an organization")
    create.add_argument("--org", required=True, help="organization id")
    create.add_argument("--name", default="")
    create.add_argument("--tier", default="standard", choices=sorted(TIERS))
    create.add_argument("--limits", help="JSON object of overrides on the tier's limits")
    create.set_defaults(run=operator.orgs_create)

    set_tier = org_commands.add_parser("set-tier", help="change an organization's tier")
    set_tier.add_argument("--org", required=True)
    set_tier.add_argument("--tier", required=True, choices=sorted(TIERS))
    set_tier.set_defaults(run=operator.orgs_set_tier)

    set_limits = org_commands.add_parser(
        "set-limits", help="replace an organization's overrides of its tier's limits"
    )
    set_limits.add_argument("--org", required=True)
    set_limits.add_argument("--limits", required=True, help="JSON object; {} clears them")
    set_limits.set_defaults(run=operator.orgs_set_limits)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except GantryError as exc:
        print(f"gantry: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"gantry: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
