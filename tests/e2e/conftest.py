"""A live local server, started the way `make dev` starts it, on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

DEV_KEY = "gnt_e2etest01_EndToEndTestSecretOnly0123456789"
# Start-up imports moto and provisions tables, queues and state machines: ~8 s here, more
# on a loaded machine.
STARTUP_SECONDS = 120


@dataclass
class LiveServer:
    base_url: str
    api_key: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="package")
def live_server() -> Iterator[LiveServer]:
    port = free_port()
    env = {**os.environ, "GANTRY_DEV_API_KEY": DEV_KEY}
    env.pop("GANTRY_AWS_ENDPOINT_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gantry.local.cli", "dev", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise RuntimeError(f"gantry dev exited early:\n{output}")
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gantry dev did not become healthy in {STARTUP_SECONDS} s")
            time.sleep(0.1)
        yield LiveServer(base_url=base_url, api_key=DEV_KEY)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
