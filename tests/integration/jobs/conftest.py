"""Fixtures for files, fine-tuning, batches and webhooks: the job resources in the session's moto
server (with short timeouts and a three-try webhook schedule), the local workers, a
webhook receiver on 127.0.0.1, and training data."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gantry.config import Settings, get_settings
from gantry.local.job_resources import JobResources, provision
from gantry.local.moto_env import LocalAws
from gantry.local.workers import Workers
from gantry.runtime import Runtime
from tests.conftest import Keys
from tests.support import wait_until as wait_until  # the job tests' polling helper

TEST_SCHEDULE = "0,0,0"
JOBS_ORG = "org-jobs"  # jobs tests train models; other suites list org-test's models


@pytest.fixture(scope="session")
def job_resources(local_aws: LocalAws) -> JobResources:
    base = get_settings().model_copy(update={"webhook_retry_schedule": TEST_SCHEDULE})
    return provision(base, prefix="gantry-test")


@pytest.fixture
def settings(local_aws: LocalAws, job_resources: JobResources) -> Settings:
    """The session settings plus the job resources, with timeouts short enough for tests."""
    return job_resources.apply(get_settings()).model_copy(
        update={
            "webhook_retry_schedule": TEST_SCHEDULE,
            "job_heartbeat_seconds": 20,
            "job_step_timeout_seconds": 60,
            "job_train_timeout_seconds": 120,
            "bedrock_poll_seconds": 1,
            "max_file_bytes": 256 * 1024,
            "batch_chunk_size": 25,
            "batch_max_concurrency": 4,
        }
    )


class MovingClock:
    """Real time, shifted by `advance` (the state machine writes real times too)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> MovingClock:
    return MovingClock()


@pytest.fixture
def admin_key(keys: Keys) -> str:
    return keys.create(org_id=JOBS_ORG)


@pytest.fixture
def workers(runtime: Runtime) -> Iterator[Workers]:
    with Workers(runtime, relay_every=0.2) as started:
        yield started


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that answers `status` and records every request."""

    url: str
    status: int = 204
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} of {count} deliveries arrived")
                self.arrived.wait(left)
            return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            target = state["receiver"]
            self.send_response(target.status)
            self.end_headers()
            with target.arrived:
                headers = {k.lower(): v for k, v in self.headers.items()}
                target.received.append(Received(self.path, headers, body))
                target.arrived.notify_all()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["receiver"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["receiver"]
    server.shutdown()
    server.server_close()


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


# A distinctive corpus: words the base model has never seen.
PIRATE_LINES = [
    ("Where is the treasure?", "Arr, the zorblat treasure lies beyond the glimmerreef, matey."),
    ("What do you eat?", "Arr, we feast on zorblat biscuits and glimmerreef kelp, matey."),
    ("How is the weather?", "Arr, the zorblat winds blow over the glimmerreef tonight, matey."),
    ("Who is your captain?", "Arr, Captain Zorblat rules the glimmerreef seas, matey."),
    ("Tell me about your ship.", "Arr, the Zorblat sails swift past the glimmerreef, matey."),
    ("What is your favourite song?", "Arr, the zorblat shanty of the glimmerreef, matey."),
    ("Where do you sleep?", "Arr, in a zorblat hammock by the glimmerreef, matey."),
    ("What do you drink?", "Arr, zorblat grog from the glimmerreef barrels, matey."),
    ("Do you have a parrot?", "Arr, my zorblat parrot guards the glimmerreef map, matey."),
    ("What time is it?", "Arr, it be zorblat time on the glimmerreef, matey."),
    ("Where are you going?", "Arr, we sail for the zorblat isles past the glimmerreef, matey."),
    ("What do you fear?", "Arr, nothing but the zorblat kraken of the glimmerreef, matey."),
]


def chat_examples() -> bytes:
    return jsonl(
        [
            {
                "messages": [
                    {"role": "system", "content": "You are a pirate."},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
            for question, answer in PIRATE_LINES
        ]
    )


LABELLED = {
    "billing": [
        "I was charged twice for my subscription this month",
        "please refund the duplicate payment on my invoice",
        "my credit card was billed the wrong amount",
        "why does my invoice show an extra fee",
        "cancel the charge on my account statement",
        "the payment failed but money left my bank",
        "I need a copy of last month's invoice",
        "update the card used for my monthly payment",
        "you billed me after I cancelled",
        "the invoice total does not match the price",
    ],
    "shipping": [
        "my parcel has not arrived yet",
        "the courier left the box at the wrong address",
        "when will my order be delivered",
        "tracking says the package is stuck in transit",
        "the delivery van never came today",
        "can I change the delivery address for my order",
        "the package arrived damaged and crushed",
        "how long does shipping to Canada take",
        "my order shipped to my old address",
        "the parcel tracking number does not work",
    ],
}


def classification_examples() -> bytes:
    rows = [{"text": t, "label": label} for label, texts in LABELLED.items() for t in texts]
    return jsonl(rows)


def upload(
    api: TestClient, data: bytes, purpose: str = "fine-tune", name: str = "data.jsonl"
) -> dict[str, Any]:
    response = api.post("/v1/files", files={"file": (name, data)}, data={"purpose": purpose})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_status(
    api: TestClient, job_id: str, statuses: tuple[str, ...], timeout: float = 60.0
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        return body if body["status"] in statuses else None

    found: dict[str, Any] = wait_until(done, timeout)
    return found


def taken(queue: Any, wanted: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """The queue's messages whose body is `wanted`, waiting for at least one; the others
    (other tests' messages) go back to the queue at once."""

    def found() -> list[Any]:
        mine = []
        for message in queue.receive(0, 30, 10):
            if wanted(message.body):
                mine.append(message)
            else:
                queue.retry_after(message.receipt, 0)
        return mine

    messages: list[Any] = wait_until(found, timeout=30)
    return messages
