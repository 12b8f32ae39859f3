"""Landmark metrics: pose and expression preservation as normalised L1 errors.

``NME = mean_i (|dx_i| + |dy_i|) / IOD`` over the 68 dlib points (pose) or the 51
inner points 17-67 (expression: brows, eyes, nose, mouth; the jaw line is left out), where
IOD is the inter-ocular distance of the *original* face (outer eye corners 36 and 45,
the 300-W convention). A face shifted by ``t`` pixels along one axis scores ``t / IOD``.
"""

from __future__ import annotations

import numpy as np

INNER = slice(17, 68)


def inter_ocular_distance(landmarks68: np.ndarray) -> float:
    """Distance between the outer eye corners (points 36 and 45)."""
    pts = np.asarray(landmarks68, np.float64)
    return float(np.linalg.norm(pts[45] - pts[36]))


def nme_l1(reference: np.ndarray, predicted: np.ndarray, iod: float | None = None, points: slice = slice(0, 68)) -> float:
    """Mean per-point L1 distance between two (68, 2) landmark sets, over ``iod``."""
    ref = np.asarray(reference, np.float64)
    pred = np.asarray(predicted, np.float64)
    if ref.shape != (68, 2) or pred.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {ref.shape} and {pred.shape}")
    iod = inter_ocular_distance(ref) if iod is None else float(iod)
    if iod <= 0:
        return float("nan")
    return float(np.abs(ref[points] - pred[points]).sum(axis=1).mean() / iod)


def pose_nme(reference: np.ndarray, predicted: np.ndarray, iod: float | None = None) -> float:
    """L1 NME over all 68 points."""
    return nme_l1(reference, predicted, iod)


def expression_nme(reference: np.ndarray, predicted: np.ndarray, iod: float | None = None) -> float:
    """L1 NME over the 51 inner points (17-67)."""
    return nme_l1(reference, predicted, iod, INNER)
