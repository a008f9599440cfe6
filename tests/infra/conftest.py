"""One Gantry CDK app for the whole infra suite (building it starts jsii: seconds, not ms)."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Template

from infra.app import build_app
from tests.infra.support import SKIP_BUNDLING, GantryApp


@pytest.fixture(scope="session")
def stacks() -> GantryApp:
    # cdk-nag is on: Template.from_stack synthesizes with validation, so any
    # unacknowledged finding fails here, before a single assertion runs.
    app, data, api = build_app(SKIP_BUNDLING, nag=True)
    return GantryApp(
        app=app,
        data=data,
        api=api,
        data_template=Template.from_stack(data),
        api_template=Template.from_stack(api),
    )
