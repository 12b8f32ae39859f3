"""Capture-to-output latency: exact percentiles per report window, bounded memory overall.

A live stream may run for days, so the whole-run figures come from a log-spaced
histogram (1 % wide bins from 0.1 ms to 1000 s: under 2,000 counters, percentiles
within 0.5 %) rather than from every sample; each report window keeps its samples and
gives exact percentiles.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

_LOW, _HIGH, _RATIO = 1e-4, 1e3, 1.01
_BINS = int(math.ceil(math.log(_HIGH / _LOW) / math.log(_RATIO)))


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of a set of latencies, in seconds (None when there were no samples)."""

    count: int
    p50: float | None
    p99: float | None
    max: float | None

    def line(self) -> str:
        """``latency p50 41 ms p99 87 ms max 120 ms`` (or ``latency n/a``)."""
        if not self.count:
            return "latency n/a (no frames)"
        return f"latency p50 {_ms(self.p50)} p99 {_ms(self.p99)} max {_ms(self.max)}"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


class LatencyStats:
    """Collects one latency per output frame; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hist = np.zeros(_BINS + 2, np.int64)  # [under, bins..., over]
        self._count = 0
        self._max = 0.0
        self._window: list[float] = []

    def add(self, seconds: float) -> None:
        """Record the latency of one frame."""
        seconds = max(0.0, float(seconds))
        with self._lock:
            self._hist[_bin(seconds)] += 1
            self._count += 1
            self._max = max(self._max, seconds)
            self._window.append(seconds)

    @property
    def count(self) -> int:
        return self._count

    def window(self) -> LatencySummary:
        """Exact percentiles of the samples since the previous call, and start a new window."""
        with self._lock:
            samples, self._window = self._window, []
        if not samples:
            return LatencySummary(0, None, None, None)
        values = np.asarray(samples)
        p50, p99 = np.percentile(values, [50, 99])
        return LatencySummary(len(samples), float(p50), float(p99), float(values.max()))

    def total(self) -> LatencySummary:
        """Percentiles over every sample so far (from the histogram, within 0.5 %)."""
        with self._lock:
            hist, count, peak = self._hist.copy(), self._count, self._max
        if not count:
            return LatencySummary(0, None, None, None)
        return LatencySummary(count, _hist_percentile(hist, 0.50, peak), _hist_percentile(hist, 0.99, peak), peak)


def _bin(seconds: float) -> int:
    if seconds < _LOW:
        return 0
    if seconds >= _HIGH:
        return _BINS + 1
    return 1 + min(_BINS - 1, int(math.log(seconds / _LOW) / math.log(_RATIO)))


def _hist_percentile(hist: np.ndarray, q: float, peak: float) -> float:
    # Same rank convention as numpy's default (linear) for large counts: the sample at q*(n-1).
    rank = q * (int(hist.sum()) - 1)
    index = int(np.searchsorted(np.cumsum(hist), rank, side="right"))
    if index == 0:
        return _LOW / 2
    if index > _BINS:
        return peak
    low = _LOW * _RATIO ** (index - 1)
    return min(peak, low * math.sqrt(_RATIO))  # geometric middle of the bin
