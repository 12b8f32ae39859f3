"""Percentile summaries of per-frame stage times, per frame and per face."""

from __future__ import annotations

import statistics
from typing import Mapping, Sequence

import numpy as np

PERCENTILES: tuple[int, ...] = (50, 95, 99)


def percentiles(samples: Sequence[float]) -> dict[str, float] | None:
    """``{"p50": ..., "p95": ..., "p99": ...}`` of ``samples`` (numpy's linear rule); None when empty."""
    if len(samples) == 0:
        return None
    values = np.percentile(np.asarray(samples, np.float64), PERCENTILES)
    return {f"p{q}": float(v) for q, v in zip(PERCENTILES, values)}


def per_face(per_frame: Sequence[float], faces: Sequence[int]) -> list[float]:
    """Each frame's time divided by its face count; frames without faces are left out."""
    return [t / n for t, n in zip(per_frame, faces) if n > 0]


def summarize_stage(per_frame: Sequence[float], faces: Sequence[int]) -> dict:
    """Percentiles of one stage over the frames it ran in, per frame and per face."""
    return {
        "frames": len(per_frame),
        "per_frame": percentiles(per_frame),
        "per_face": percentiles(per_face(per_frame, faces)),
    }


def median_of_summaries(summaries: Sequence[Mapping]) -> dict:
    """Median over repeats of each percentile of a stage summary (``summarize_stage`` output)."""
    out: dict = {"frames": int(statistics.median(s["frames"] for s in summaries))}
    for unit in ("per_frame", "per_face"):
        present = [s[unit] for s in summaries if s[unit] is not None]
        out[unit] = {key: statistics.median(p[key] for p in present) for key in present[0]} if present else None
    return out
