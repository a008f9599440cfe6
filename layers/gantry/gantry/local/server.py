"""One process serving the whole API on loopback, with moto standing in for AWS."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from gantry.adapters.aws import client, reset_clients
from gantry.config import get_settings
from gantry.domain.keys import new_api_key
from gantry.domain.orgs import Organization
from gantry.http.app import create_app
from gantry.local.job_resources import provision as provision_jobs
from gantry.local.moto_env import (
    LOCAL_ORG,
    LocalAws,
    create_tables,
    key_record,
    start_moto_server,
)
from gantry.local.workers import Workers
from gantry.runtime import Runtime, set_runtime


@dataclass
class LocalStack:
    aws: LocalAws
    runtime: Runtime
    admin_key: str
    workers: Workers | None = None

    def stop(self) -> None:
        if self.workers is not None:
            self.workers.stop()
        self.aws.stop()


def bootstrap(admin_key: str | None = None, start_workers: bool = False) -> LocalStack:
    """Start moto, point the settings at it, create the tables, the job resources (bucket,
    queues, fine-tuning state machine) and seed an admin key; with `start_workers`, run the
    queue workers on background threads."""
    aws = start_moto_server()
    os.environ["GANTRY_AWS_ENDPOINT_URL"] = aws.endpoint_url
    os.environ.setdefault("GANTRY_ENV", "local")
    get_settings.cache_clear()
    reset_clients()
    os.environ.update(provision_jobs(get_settings()).environment())
    get_settings.cache_clear()
    runtime = Runtime(get_settings())
    set_runtime(runtime)
    create_tables(client("dynamodb", runtime.settings), runtime.settings)
    key = admin_key or new_api_key()[0]
    runtime.key_store.put_org(
        Organization(LOCAL_ORG, name="Local development", tier="enterprise", created_at=time.time())
    )
    runtime.key_store.put_key(key_record(key, runtime.pepper()))
    for provider in runtime.providers.values():
        warm = getattr(provider, "warm", None)
        if callable(warm):
            warm()
    workers = Workers(runtime).start() if start_workers else None
    return LocalStack(aws=aws, runtime=runtime, admin_key=key, workers=workers)


def bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it Nagle and delayed ACKs add 40 ms to every small response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(host: str, port: int, admin_key: str | None, banner: bool = True) -> None:
    """Serve until interrupted (`make dev`)."""
    stack = bootstrap(admin_key, start_workers=True)
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    if banner:
        print(
            f"Gantry is serving on http://{host}:{bound_port}  (docs: /docs)\n"
            f"Admin key: {stack.admin_key}\n"
            f"Try: curl http://{host}:{bound_port}/v1/models "
            f"-H 'Authorization: Bearer {stack.admin_key}'",
            flush=True,
        )
    config = uvicorn.Config(
        create_app(), log_level="warning", access_log=False, timeout_graceful_shutdown=3
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        stack.stop()


class BackgroundServer:
    """The API on a free loopback port in a thread, for tests and benchmarks.

    With `runtime`, it serves that runtime (whose AWS is already set up); otherwise it
    bootstraps its own moto server and admin key.
    """

    def __init__(
        self, admin_key: str | None = None, host: str = "127.0.0.1", runtime: Runtime | None = None
    ) -> None:
        self.stack = None if runtime is not None else bootstrap(admin_key, start_workers=True)
        self.sock = bind(host, 0)
        self.base_url = f"http://{host}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(), log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread stopped during start-up")
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if self.stack is not None:
            self.stack.stop()
