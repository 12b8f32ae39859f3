"""One monotonic output clock for a live stream, across reconnects and sources without timestamps.

Source timestamps are the best record of when frames were taken (they survive network
jitter), but a live source restarts them on every reconnect and raw frames have none.
:class:`Timeline` follows the source clock while it advances plausibly and falls back to
the capture (wall) clock across gaps, so the output time never goes backwards or jumps.
"""

from __future__ import annotations

# A source clock step outside (0, MAX_STEP] seconds is a discontinuity (reconnect, wrap, reset).
MAX_STEP = 5.0
MIN_STEP = 1e-3  # the smallest step the output clock takes: every frame gets its own time


class Timeline:
    """Turns (source time, capture time) pairs into strictly increasing output seconds from 0."""

    def __init__(self) -> None:
        self._out: float | None = None
        self._source: float | None = None
        self._captured: float | None = None
        self.discontinuities = 0

    def __call__(self, source_time: float | None, captured_at: float) -> float:
        """Output time of the next frame, in seconds since the first one."""
        if self._out is None:
            out = 0.0
        else:
            step = None
            if source_time is not None and self._source is not None:
                step = source_time - self._source
                if not 0.0 < step <= MAX_STEP:
                    step = None
                    self.discontinuities += 1
            if step is None:
                step = captured_at - (self._captured if self._captured is not None else captured_at)
            out = self._out + max(step, MIN_STEP)
        self._out, self._source, self._captured = out, source_time, captured_at
        return out
