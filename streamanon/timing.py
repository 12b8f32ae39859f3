"""Per-stage wall-clock timing of the pipeline, for benchmarks.

The pipeline wraps each stage in ``timer.stage(name)``; without a timer that is a no-op, so
normal runs pay nothing but a context manager per stage. The benchmark passes a
:class:`StageTimer` and reads each frame's stage times with :meth:`StageTimer.take`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, ContextManager, Iterator, Protocol


class StageClock(Protocol):
    """What the pipeline needs from a timer: a context manager per named stage."""

    def stage(self, name: str) -> ContextManager[None]: ...


class NullTimer:
    """Times nothing: the default of every pipeline call."""

    def stage(self, name: str) -> ContextManager[None]:
        return contextlib.nullcontext()


NULL_TIMER = NullTimer()


class StageTimer:
    """Adds up ``time.perf_counter`` seconds per stage name until :meth:`take` is called.

    A stage entered several times before ``take`` (once per face, say) accumulates.

    Args:
        sync: called at the end of every stage before the clock is read; pass
            ``torch.cuda.synchronize`` on a GPU so that asynchronous kernels are charged to
            the stage that launched them, not to the next one that waits for them.
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self._sync = sync
        self._current: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync is not None:
                self._sync()
            self._current[name] = self._current.get(name, 0.0) + (time.perf_counter() - start)

    def take(self) -> dict[str, float]:
        """Seconds per stage since the last call, in the order stages first ran; then reset."""
        current, self._current = self._current, {}
        return current
