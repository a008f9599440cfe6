"""Test doubles shared by several suites."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gantry.domain.errors import RateLimited
from gantry.domain.keys import Principal
from gantry.domain.metering import Actual, Admission, Estimate
from gantry.domain.registry import ModelSpec
from gantry.ports import (
    ChoiceDone,
    GenerationResult,
    Message,
    SamplingParams,
    StreamEvent,
    TextDelta,
)


@dataclass
class RecordingMeter:
    inline = False
    refuse: bool = False
    admitted: list[Admission] = field(default_factory=list)
    settled: list[tuple[Admission, Actual]] = field(default_factory=list)
    released: list[Admission] = field(default_factory=list)

    def admit(
        self,
        request_id: str,
        principal: Principal,
        endpoint: str,
        model: ModelSpec,
        estimate: Estimate,
    ) -> Admission:
        if self.refuse:
            raise RateLimited(
                "Rate limit reached for requests per minute.",
                details={"dimension": "requests_per_minute"},
                retry_after=2.2,
            )
        admission = Admission(
            request_id,
            principal,
            endpoint,
            model,
            estimate,
            headers={"x-ratelimit-limit-requests": "10"},
        )
        self.admitted.append(admission)
        return admission

    def settle(self, admission: Admission, actual: Actual) -> None:
        self.settled.append((admission, actual))

    def release(self, admission: Admission) -> None:
        self.released.append(admission)


@dataclass
class SlowProvider:
    """A provider that produces one token every `delay` seconds and records what it did:
    how many tokens it produced and whether it was stopped (closed) early."""

    delay: float = 0.05
    tokens: int = 20
    pause_after: int | None = None  # pause this long before token N
    pause: float = 0.0
    fail_after: int | None = None  # raise after producing this many tokens
    produced: int = 0
    closed: bool = False
    finished: threading.Event = field(default_factory=threading.Event)

    def is_instant(self, model: ModelSpec) -> bool:
        return False

    def count_chat_tokens(self, model: ModelSpec, messages: Sequence[Message]) -> int:
        return sum(len(m.content.split()) for m in messages)

    def count_tokens(self, model: ModelSpec, text: str) -> int:
        return len(text.split())

    def chat_stream(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> Iterator[StreamEvent]:
        try:
            for i in range(min(self.tokens, params.max_tokens)):
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("provider failed mid-stream")
                time.sleep(self.pause if i == self.pause_after else self.delay)
                self.produced += 1
                yield TextDelta(0, f" t{i}", 1)
            yield ChoiceDone(0, "length", self.produced)
        except GeneratorExit:
            self.closed = True
            raise
        finally:
            self.finished.set()

    def chat(
        self, model: ModelSpec, messages: Sequence[Message], params: SamplingParams
    ) -> GenerationResult:
        raise NotImplementedError("only streaming is used in these tests")


def wait_until(check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds (for
    state another thread, process or the state machine writes)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
