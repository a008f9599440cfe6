"""Recent latencies per provider and model, for the hedging delay."""

from __future__ import annotations

import threading
from collections import deque


class LatencyWindow:
    """The last `size` latencies (seconds) of one backend; `percentile` over them."""

    def __init__(self, size: int = 200) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        with self._lock:
            self._samples.append(seconds)

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, q: float) -> float | None:
        with self._lock:
            ordered = sorted(self._samples)
        if not ordered:
            return None
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]


class Latencies:
    def __init__(self, size: int = 200) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], LatencyWindow] = {}

    def get(self, provider: str, model: str) -> LatencyWindow:
        key = (provider, model)
        window = self._windows.get(key)
        if window is None:
            with self._lock:
                window = self._windows.setdefault(key, LatencyWindow(self._size))
        return window
