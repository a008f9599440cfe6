"""Gantry's CDK app. Run through the CDK CLI (`npx cdk synth`, see cdk.json).

cdk.json runs it as a module (`python -m infra.app`): running the file directly would put
`infra/` first on sys.path, where `infra/constructs` would shadow the `constructs` package.
`build_app` is also what the infrastructure tests use, so they build exactly what synth does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from aws_cdk import App, Environment, Tags

from infra.constants import API_STACK_NAME, APP_NAME, DATA_STACK_NAME, REPO_ROOT
from infra.nag import add_nag_checks
from infra.stacks.api_stack import ApiStack
from infra.stacks.data_stack import DataStack

CDK_JSON = REPO_ROOT / "cdk.json"


def _feature_flags() -> dict[str, Any]:
    """The context (feature flags) from cdk.json, so tests see what the CLI passes."""
    try:
        context = json.loads(CDK_JSON.read_text()).get("context", {})
    except FileNotFoundError:
        return {}
    return dict(context)


def _environment() -> Environment | None:
    """The CLI's default account/region if it has them; otherwise an environment-agnostic app."""
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = os.environ.get("CDK_DEFAULT_REGION")
    if not account and not region:
        return None
    return Environment(account=account, region=region)


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    nag: bool = True,
    outdir: str | None = None,
) -> tuple[App, DataStack, ApiStack]:
    """Build the app. Pass `{"aws:cdk:bundling-stacks": []}` to skip layer bundling."""
    app = App(context={**_feature_flags(), **(context or {})}, outdir=outdir)
    env = _environment()
    data = DataStack(
        app,
        DATA_STACK_NAME,
        env=env,
        description="Gantry data: DynamoDB tables and the API key pepper (retained)",
    )
    api = ApiStack(
        app,
        API_STACK_NAME,
        data=data,
        env=env,
        description="Gantry API: REST API, Lambda functions and layers",
    )
    Tags.of(app).add("application", APP_NAME)
    if nag:
        add_nag_checks(app)
    return app, data, api


def main() -> None:
    app, _, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
