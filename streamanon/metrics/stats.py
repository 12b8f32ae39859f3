"""Aggregation of per-face values into per-track and per-clip summaries (mean, std, n)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Mapping

import numpy as np


def summarize(values: Iterable[float | bool | None]) -> dict[str, float | int | None]:
    """``{"mean", "std", "n"}`` over the finite values (booleans count as 0/1).

    ``None`` and NaN are skipped (a metric that could not be computed for a face);
    ``mean``/``std`` are None when nothing is left. ``std`` is the population std.
    """
    arr = np.asarray([float(v) for v in values if v is not None], np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}


def summarize_records(records: Iterable[Mapping[str, object]], keys: Iterable[str]) -> dict[str, dict]:
    """Summaries of ``keys`` over a list of per-face dicts."""
    records = list(records)
    return {key: summarize(r.get(key) for r in records) for key in keys}  # type: ignore[misc]


def group_by(records: Iterable[Mapping[str, object]], key: str) -> dict[object, list[Mapping[str, object]]]:
    """Records grouped by the value of ``key``, in first-seen order."""
    groups: dict[object, list[Mapping[str, object]]] = defaultdict(list)
    for r in records:
        groups[r[key]].append(r)
    return dict(groups)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: turn NaN/inf into None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
