"""Buffered calls whose client leaves, over a real socket: the upstream request is aborted
before the upstream answers, the reservation is released (nothing billed), and no retry,
fallback or circuit failure follows. Under Mangum, where no disconnect comes before the
answer, a buffered call is answered and settled as before."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mangum import Mangum

from gantry.domain.orgs import Limits
from gantry.http.app import create_app
from gantry.local.invoke import LocalContext
from gantry.local.server import BackgroundServer
from gantry.local.upstream import Behaviour, Upstream
from gantry.runtime import Runtime
from tests.e2e.test_streaming import wait_for
from tests.integration.test_limits import new_key, new_org
from tests.integration.test_limits_http import ledger_items
from tests.provider_support import REMOTE_CHAT, REMOTE_EMBED, Remote, wire_remote
from tests.support import RecordingMeter

ROOT = Path(__file__).resolve().parents[2]
# Far longer than any wait here: an upstream that finished is a call that was not cut.
SLOW = Behaviour(delay=60.0)
MESSAGES = [{"role": "user", "content": "tell me about the sea"}]
BUFFERED = {
    "chat": ("/v1/chat/completions", {"model": REMOTE_CHAT, "messages": MESSAGES}),
    # A stream waiting for its first token is cut the same way.
    "stream": (
        "/v1/chat/completions",
        {"model": REMOTE_CHAT, "messages": MESSAGES, "stream": True},
    ),
    "completions": ("/v1/completions", {"model": REMOTE_CHAT, "prompt": "the sea"}),
    "embeddings": ("/v1/embeddings", {"model": REMOTE_EMBED, "input": ["the sea", "the sky"]}),
}


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture
def remote(runtime: Runtime, upstream: Upstream) -> Remote:
    # One provider failure would open the circuit: a cancelled call must not count as one.
    return wire_remote(runtime, upstream, failures=1)


@pytest.fixture
def server(runtime: Runtime, remote: Remote) -> Iterator[BackgroundServer]:
    with BackgroundServer(runtime=runtime) as background:
        yield background


@contextmanager
def in_flight(
    server: BackgroundServer,
    key: str,
    path: str,
    body: dict[str, Any],
    upstream: Upstream,
    request_id: str | None = None,
) -> Iterator[None]:
    """A buffered request sent on a raw socket, open until the upstream has it; leaving
    the block closes the connection without reading anything."""
    payload = json.dumps(body).encode()
    host, port = server.base_url.removeprefix("http://").split(":")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    )
    if request_id is not None:
        head += f"X-Request-Id: {request_id}\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(head.encode() + b"\r\n" + payload)
        wait_for(lambda: upstream.received >= 1)
        yield


@pytest.mark.parametrize("endpoint", sorted(BUFFERED))
def test_a_client_that_leaves_aborts_the_upstream_call_and_gets_its_reservation_back(
    server: BackgroundServer, admin_key: str, runtime: Runtime, remote: Remote, endpoint: str
) -> None:
    meter = RecordingMeter()
    runtime.__dict__["meter"] = meter
    upstream = remote.upstream
    upstream.default = SLOW  # every attempt, a hedged twin too, would take a minute
    path, body = BUFFERED[endpoint]
    with in_flight(server, admin_key, path, body, upstream):
        assert len(meter.admitted) == 1 and meter.released == []
    wait_for(lambda: upstream.disconnects >= 1 and upstream.disconnects == upstream.received)
    assert upstream.completed == 0
    wait_for(lambda: len(meter.released) == 1)
    assert meter.settled == []
    # Neither retried nor failed over, and the provider is not blamed for the client leaving.
    assert remote.sleeps == []
    spec = runtime.registry.get(str(body["model"]))
    assert remote.resilience.breaker(spec).state == "closed"

    upstream.default = Behaviour()
    answered = httpx.post(
        server.base_url + path, json=body, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert answered.status_code == 200, answered.text
    assert len(meter.settled) == 1 and len(meter.released) == 1


def test_with_the_real_meter_the_quota_is_back_and_no_ledger_item_is_written(
    server: BackgroundServer, runtime: Runtime, remote: Remote
) -> None:
    org_id = new_org(runtime, tokens_per_day=100_000)
    caller = new_key(runtime, org_id, limits=Limits(tokens_per_day=50_000, concurrent_requests=4))
    scopes = [f"KEY#{caller.record.key_id}", f"ORG#{org_id}"]

    def quota() -> list[tuple[int, int]]:
        states = runtime.usage.quota_states(scopes)
        return [(states[pk].day_tokens, states[pk].leases_held) for pk in scopes]

    before = quota()
    remote.upstream.default = SLOW
    request_id = f"req_{uuid.uuid4().hex}"
    path, body = BUFFERED["chat"]
    with in_flight(server, caller.full_key, path, body, remote.upstream, request_id):
        reserved = quota()
        assert all(tokens > 0 and leases == 1 for tokens, leases in reserved)
    wait_for(lambda: remote.upstream.disconnects == 1)
    wait_for(lambda: quota() == before)
    assert ledger_items(runtime, request_id) == []
    assert remote.upstream.completed == 0


def test_under_mangum_a_buffered_call_is_answered_and_settled(
    runtime: Runtime, remote: Remote, admin_key: str
) -> None:
    meter = RecordingMeter()
    runtime.__dict__["meter"] = meter
    remote.upstream.default = Behaviour(delay=0.2)
    event = json.loads((ROOT / "events/completions/chat_completion.json").read_text())
    authorization = f"Bearer {admin_key}"
    event["headers"]["Authorization"] = authorization
    event["multiValueHeaders"]["Authorization"] = [authorization]
    event["body"] = json.dumps({"model": REMOTE_CHAT, "messages": MESSAGES})
    handler = Mangum(create_app(), lifespan="off", api_gateway_base_path="/")
    response = handler(event, LocalContext("completions"))
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["choices"][0]["message"]["content"]
    assert len(meter.settled) == 1 and meter.released == []
    assert remote.upstream.completed == 1 and remote.upstream.disconnects == 0
