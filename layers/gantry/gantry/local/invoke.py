"""`gantry invoke <function> <event.json>`: run a Lambda handler locally against moto."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gantry.local.moto_env import EXAMPLE_API_KEY


@dataclass
class LocalContext:
    """The attributes of a Lambda context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def load_handler(function: str, functions_dir: str = "functions") -> Any:
    path = Path(functions_dir) / function / "handler.py"
    if not path.is_file():
        known = sorted(p.parent.name for p in Path(functions_dir).glob("*/handler.py"))
        raise ValueError(f"no handler at {path}; functions: {', '.join(known) or 'none'}")
    spec = importlib.util.spec_from_file_location(f"functions_{function}_handler", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def prepare_environment() -> None:
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "GantryLocal")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "gantry")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


def run_event(handler: Any, event: dict[str, Any], function: str) -> dict[str, Any]:
    result: dict[str, Any] = handler(event, LocalContext(function_name=f"gantry-{function}"))
    return result


def invoke(function: str, event_path: str, functions_dir: str = "functions") -> int:
    from gantry.local.server import bootstrap

    prepare_environment()
    event = json.loads(Path(event_path).read_text())
    stack = bootstrap(os.environ.get("GANTRY_DEV_API_KEY") or EXAMPLE_API_KEY)
    try:
        handler = load_handler(function, functions_dir)
        response = run_event(handler, event, function)
    finally:
        stack.aws.stop()
    body = response.get("body")
    if isinstance(body, str) and not response.get("isBase64Encoded"):
        with contextlib.suppress(json.JSONDecodeError):
            response = {**response, "body": json.loads(body)}
    json.dump(response, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if int(response.get("statusCode", 500)) < 500 else 1
