"""Lighting metrics: scale-invariant errors between original and anonymized faces.

Both follow the seed paper's Eq. 3: the anonymized values are first multiplied by the
least-squares optimal scale ``alpha = <x, y> / <y, y>``, so a global change of exposure
or albedo is not counted, only a change in the *shape* of the light.

- ``Si-MSE`` on the face pixels (RGB in [0, 1]);
- ``Si-L2`` on the shading maps. The paper computes shading with SfSNet; we use the
  project's bilateral shading (``photometric.reference.shading_albedo``), which only
  approximates an intrinsic decomposition, so values are not comparable to the paper's.
"""

from __future__ import annotations

import numpy as np

# Shading parameters: the pipeline's defaults (PhotometricConfig) for crops of this size.
SHADING_DIAMETER = 9
SHADING_SIGMA_COLOR = 0.1
SHADING_SIGMA_SPACE = 5.0


def _weighted(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    if mask is None:
        w = np.ones(x.shape, np.float64)
    else:
        w = np.asarray(mask, np.float64)
        # A per-pixel mask (H, W) applies to every channel of (H, W, C) images.
        while w.ndim < x.ndim:
            w = w[..., None]
        w = np.broadcast_to(w, x.shape)
    return x.ravel(), y.ravel(), w.ravel()


def optimal_scale(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """``alpha`` minimising ``sum w (x - alpha y)^2``; 1 when ``y`` is all zero."""
    x, y, w = _weighted(x, y, mask)
    denom = float(np.sum(w * y * y))
    return float(np.sum(w * x * y) / denom) if denom > 0 else 1.0


def si_mse(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Scale-invariant MSE ``min_alpha mean_w (x - alpha y)^2`` (paper Eq. 3).

    ``x`` is the reference (original), ``y`` the anonymized values; ``mask`` (broadcastable,
    e.g. (H, W) for (H, W, 3) images) weights the pixels. NaN when the mask is empty.
    """
    xs, ys, w = _weighted(x, y, mask)
    total = float(w.sum())
    if total <= 0:
        return float("nan")
    alpha = optimal_scale(x, y, mask)
    return float(np.sum(w * (xs - alpha * ys) ** 2) / total)


def si_l2(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Scale-invariant L2: the root of :func:`si_mse` (same units as the maps)."""
    value = si_mse(x, y, mask)
    return float(np.sqrt(value)) if np.isfinite(value) else value


def shading_maps(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Albedo (B, S, S, 3) and shading (B, S, S) of uint8 face crops (B, S, S, 3)."""
    from ..photometric.reference import shading_albedo

    return shading_albedo(crops, SHADING_DIAMETER, SHADING_SIGMA_COLOR, SHADING_SIGMA_SPACE)
