"""`gantry invoke` runs a function's real entry point on a sample event, against moto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def invoke(function: str, event: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
    return subprocess.run(
        [sys.executable, "-m", "gantry.local.cli", "invoke", function, event],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,  # a cold start imports moto and boto; a loaded machine is slow
        check=False,
    )


def test_invoke_a_buffered_function() -> None:
    result = invoke("inference", "events/inference/embeddings.json")
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["statusCode"] == 200
    assert len(response["body"]["data"]) == 2


def test_invoke_prints_a_stream_chunk_by_chunk() -> None:
    result = invoke("completions", "events/completions/chat_completion_stream.json")
    assert result.returncode == 0, result.stderr
    frames = [line for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert "status 200" in result.stderr
