"""The `gantry` command: local server, local Lambda invocations, key bootstrap."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence


def _dev(args: argparse.Namespace) -> int:
    from gantry.local.server import serve

    serve(args.host, args.port, os.environ.get("GANTRY_DEV_API_KEY") or None)
    return 0


def _invoke(args: argparse.Namespace) -> int:
    from gantry.local.invoke import invoke

    return invoke(args.function, args.event, args.functions_dir)


def _keys_create(args: argparse.Namespace) -> int:
    from gantry.adapters.aws import client
    from gantry.config import get_settings
    from gantry.domain.keys import new_api_key
    from gantry.local.moto_env import key_record
    from gantry.runtime import Runtime

    settings = get_settings()
    runtime = Runtime(settings)
    full_key = new_api_key()[0]
    record = key_record(
        full_key,
        runtime.pepper(),
        org_id=args.org,
        scopes=tuple(s.strip() for s in args.scopes.split(",") if s.strip()),
        name=args.name,
        created_by=args.created_by,
    )
    client("dynamodb", settings)  # fail early on missing credentials
    runtime.key_store.put_key(record)
    print(
        json.dumps(
            {
                "key_id": record.key_id,
                "api_key": full_key,
                "org_id": record.org_id,
                "scopes": sorted(record.scopes),
            }
        )
    )
    print("Store this key now: it is shown only once.", file=sys.stderr)
    return 0


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

    keys = commands.add_parser("keys", help="manage API keys directly in DynamoDB")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--org", required=True)
    create.add_argument("--scopes", default="admin:full", help="comma-separated scopes")
    create.add_argument("--name", default="")
    create.add_argument("--created-by", default=os.environ.get("USER", "operator"))
    create.set_defaults(run=_keys_create)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:
        print(f"gantry: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
