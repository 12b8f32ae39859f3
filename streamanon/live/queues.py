"""The bounded hand-over between two live-stream stages, with the latency policy built in.

``realtime``: a full queue evicts its *oldest* item to make room, so a slow consumer sees
the freshest frames and latency stays bounded by the queue length; evictions are counted.
``lossless``: a full queue makes the producer wait, so nothing is lost and latency grows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

LatencyPolicy = Literal["realtime", "lossless"]
LATENCY_POLICIES: tuple[str, ...] = ("realtime", "lossless")


class FrameQueue(Generic[T]):
    """A bounded FIFO between two threads that drops the oldest item or blocks when full."""

    def __init__(self, maxsize: int, policy: LatencyPolicy = "realtime") -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be at least 1, got {maxsize}")
        if policy not in LATENCY_POLICIES:
            raise ValueError(f"unknown latency policy {policy!r}")
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0  # items evicted unprocessed (realtime only)
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: T, stop: threading.Event | None = None) -> T | None:
        """Add ``item``; return the evicted oldest item (realtime, when full), else None.

        In lossless mode this waits for room; it gives up (dropping ``item``, returned) only
        when ``stop`` is set or the queue is closed, so a stopping stream never hangs here.
        """
        with self._cond:
            if self.policy == "realtime":
                evicted = None
                if len(self._items) >= self.maxsize:
                    evicted = self._items.popleft()
                    self.dropped += 1
                self._items.append(item)
                self._cond.notify_all()
                return evicted
            while len(self._items) >= self.maxsize:
                if self._closed or (stop is not None and stop.is_set()):
                    return item
                self._cond.wait(0.1)  # short waits: `stop` is an Event, it cannot notify us
            self._items.append(item)
            self._cond.notify_all()
            return None

    def get(self, timeout: float) -> T | None:
        """Take the oldest item, waiting at most ``timeout`` seconds; None when there is none."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """Wake every waiting producer; later lossless puts no longer wait for room."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
