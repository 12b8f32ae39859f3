"""Colour metrics: CIELAB differences between the albedos of original and anonymized faces.

Albedos (``A = I / S`` from the bilateral shading, about 1 for a grey surface) are mapped
to display range by ``0.5 * A`` (unit albedo = mid grey), clipped to [0, 1], read as sRGB
and converted to CIELAB (D65) with colour-science. Reported over the face mask:

- ``delta_L``: mean |L*_orig - L*_anon|;
- ``delta_C``: mean |C*_orig - C*_anon| (chroma ``C* = sqrt(a*^2 + b*^2)``);
- ``delta_E``: mean CIEDE2000 difference.
"""

from __future__ import annotations

import warnings

import numpy as np

ALBEDO_DISPLAY_SCALE = 0.5


def _colour():
    with warnings.catch_warnings():
        # colour-science warns about optional dependencies (matplotlib) on import; not our concern.
        warnings.simplefilter("ignore")
        import colour
    return colour


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values in [0, 1], any leading shape (..., 3)."""
    colour = _colour()
    xyz = colour.sRGB_to_XYZ(np.clip(rgb, 0.0, 1.0))
    return colour.XYZ_to_Lab(xyz)


def lab_differences(lab_x: np.ndarray, lab_y: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Weighted means of |ΔL*|, |ΔC*| and ΔE2000 between two CIELAB arrays (..., 3)."""
    colour = _colour()

    lab_x = np.asarray(lab_x, np.float64).reshape(-1, 3)
    lab_y = np.asarray(lab_y, np.float64).reshape(-1, 3)
    w = np.ones(len(lab_x)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if w.sum() <= 0:
        return {"delta_L": float("nan"), "delta_C": float("nan"), "delta_E": float("nan")}
    keep = w > 0
    lab_x, lab_y, w = lab_x[keep], lab_y[keep], w[keep]
    d_l = np.abs(lab_x[:, 0] - lab_y[:, 0])
    d_c = np.abs(np.hypot(lab_x[:, 1], lab_x[:, 2]) - np.hypot(lab_y[:, 1], lab_y[:, 2]))
    d_e = colour.delta_E(lab_x, lab_y, method="CIE 2000")
    return {
        "delta_L": float(np.average(d_l, weights=w)),
        "delta_C": float(np.average(d_c, weights=w)),
        "delta_E": float(np.average(d_e, weights=w)),
    }


def albedo_color_differences(albedo_x: np.ndarray, albedo_y: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """ΔL, ΔC, ΔE2000 between two albedo maps (H, W, 3) over ``mask`` (H, W)."""
    lab_x = srgb_to_lab(ALBEDO_DISPLAY_SCALE * np.asarray(albedo_x, np.float64))
    lab_y = srgb_to_lab(ALBEDO_DISPLAY_SCALE * np.asarray(albedo_y, np.float64))
    return lab_differences(lab_x, lab_y, mask)
