"""Run the reading and the writing end of a job on their own threads.

Decoding the next frame and encoding the last one do not depend on the frame being
anonymized, and PyAV runs FFmpeg's codecs without holding the GIL: with each end on its own
thread they overlap with detection and generation instead of adding to them (on a GPU, the
device then never waits on I/O).

Both helpers keep order, hold at most ``depth`` items in flight (bounded memory), and hand an
error from their thread back to the caller, which re-raises it unchanged.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

DEPTH = 4
_POLL_S = 0.1  # how often a blocked thread looks whether it was told to stop
_END = object()


# Seconds a job that stops early waits for its decode or encode thread before it goes on without it.
GIVE_UP_S = 5.0


def read_ahead(items: Iterable[T], depth: int = DEPTH, name: str = "streamanon-read") -> Iterator[T]:
    """Yield ``items`` in order, produced on a thread of their own up to ``depth`` ahead.

    An exception raised while producing is raised here, at the position it happened. Closing
    the returned generator early (or an error in the caller) stops the thread, after the item
    it is producing at that moment, and closes ``items`` there.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        outcome: BaseException | None = None
        try:
            for item in iterator:
                if not offer((item, None)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            outcome = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        offer((_END, outcome))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    leaving_early = True
    try:
        while True:
            item, error = handoff.get()
            if item is _END:
                leaving_early = False
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        # Leaving early (an error, Ctrl-C, SIGTERM): wait for the thread only so long. A signal's
        # exception raised inside a queue operation can leave the thread waiting for good, and a
        # stopping job must not hang on it (it is a daemon thread: it dies with the process).
        thread.join(timeout=GIVE_UP_S if leaving_early else None)


class WriteBehind:
    """Run submitted calls in order on one thread of their own, up to ``depth`` behind.

    Use as a context manager. The first call that raises stops the others from running; its
    exception is raised by the next :meth:`submit` or on leaving the block. Leaving the block
    waits until every submitted call has run; leaving it on an error skips the ones not yet run.
    """

    def __init__(self, depth: int = DEPTH, name: str = "streamanon-write") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._tasks: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> WriteBehind:
        self._thread.start()
        return self

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        """Queue ``call(*args)``; blocks while ``depth`` calls wait already."""
        while True:
            self._raise_if_failed()
            try:
                self._tasks.put((call, args), timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            if task is _END:
                return
            if self._error is not None or self._cancelled:
                continue  # keep draining so that submit never blocks forever
            call, args = task
            try:
                call(*args)
            except BaseException as exc:  # noqa: BLE001 - raised in the submitting thread
                self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def __exit__(self, exc_type, exc, tb) -> None:
        self._cancelled = exc is not None
        if exc is None:
            self._tasks.put(_END)  # the thread drains the queue, so this returns
            self._thread.join()
            self._raise_if_failed()
            return
        # Leaving on an error (Ctrl-C, SIGTERM): as read_ahead, wait for the thread only so long.
        try:
            self._tasks.put(_END, timeout=GIVE_UP_S)
        except queue.Full:
            return
        self._thread.join(timeout=GIVE_UP_S)
