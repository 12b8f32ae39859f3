"""Face regions for the metrics: square crops and landmark-hull masks.

The same transform (computed from the *original* face's landmarks) cuts the original and
the anonymized frame, so both crops show the same pixels' positions.
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 128  # side of the crops the photometric metrics and thumbnails use
CROP_SCALE = 1.3  # crop side = this x the landmarks' larger extent


def crop_matrix(landmarks68: np.ndarray, size: int = CROP_SIZE, scale: float = CROP_SCALE) -> np.ndarray:
    """2x3 affine (frame -> crop) of an axis-aligned square around the landmarks."""
    pts = np.asarray(landmarks68, np.float64)
    lo, hi = pts.min(0), pts.max(0)
    side = max(float(max(hi - lo)) * scale, 1.0)
    centre = (lo + hi) / 2.0
    k = size / side
    return np.array([[k, 0.0, size / 2.0 - k * centre[0]], [0.0, k, size / 2.0 - k * centre[1]]])


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Apply a frame -> crop matrix (bilinear, replicated border)."""
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 affine."""
    pts = np.asarray(points, np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def hull_mask(landmarks68: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float32 (H, W) mask, 1 inside the convex hull of the landmarks (jaw and brows)."""
    mask = np.zeros((height, width), np.uint8)
    hull = cv2.convexHull(np.round(np.asarray(landmarks68, np.float64)).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(np.float32)


def box_of(landmarks68: np.ndarray, height: int, width: int, margin: float = 0.1) -> tuple[int, int, int, int]:
    """Integer bounding box (x1, y1, x2, y2) of the landmarks grown by ``margin``, clipped."""
    pts = np.asarray(landmarks68, np.float64)
    lo, hi = pts.min(0), pts.max(0)
    pad = (hi - lo) * margin
    x1, y1 = np.floor(lo - pad).astype(int)
    x2, y2 = np.ceil(hi + pad).astype(int)
    return max(0, x1), max(0, y1), min(width, x2 + 1), min(height, y2 + 1)
