"""Did the anonymization cover the face? Recall against annotated faces, for every mode.

A face counts as hidden by the share of its *inner face* (the convex hull of the 68-point
annotation without the jaw line: brows, eyes, nose and mouth, what identifies a person) that no
longer shows the original's pixels. Two ways to tell which pixels those are:

- :func:`hidden_region`: the region the hide modes (blur, pixelate, solid) replace completely,
  from the tracker's boxes and the same code that hides them (:func:`streamanon.replace.hide_face`);
- :func:`changed_pixels`: pixels more than ``CHANGED_LEVELS`` grey levels from the original in
  some channel, for any mode (generate included). A pixel within that of the original shows it as
  it was; a replaced pixel that happens to land that close is counted as shown (conservative).
"""

from __future__ import annotations

from dataclasses import replace as with_fields
from typing import Iterable

import cv2
import numpy as np

from ..config import ReplaceConfig

INNER_FACE = slice(17, 68)  # brows, nose, eyes, mouth (dlib / iBUG 68-point order)
CHANGED_LEVELS = 2  # a pixel within this many levels of the original in every channel still shows it
HIDDEN_SHARE = 0.99  # inner-face share at or above which a face counts as hidden
MISSED_SHARE = 0.5  # below this share it counts as missed; in between, partly hidden


def inner_face_mask(landmarks68: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool (H, W): the convex hull of the inner-face points (17-67) of ``landmarks68``."""
    points = np.asarray(landmarks68, np.float64)[INNER_FACE]
    mask = np.zeros((height, width), np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def hidden_share(hidden: np.ndarray, landmarks68: np.ndarray) -> float:
    """Share of the inner face of ``landmarks68`` that ``hidden`` (bool (H, W)) covers; pixels of
    the face outside the image count as covered (nobody sees them). NaN for a face wholly outside."""
    face = inner_face_mask(landmarks68, *hidden.shape)
    inside = int(face.sum())
    return float(hidden[face].sum() / inside) if inside else float("nan")


def changed_pixels(original: np.ndarray, anonymized: np.ndarray, levels: int = CHANGED_LEVELS) -> np.ndarray:
    """Bool (H, W): pixels of ``anonymized`` more than ``levels`` from ``original`` in some channel."""
    if original.shape != anonymized.shape:
        raise ValueError(f"images differ in shape: {original.shape} vs {anonymized.shape}")
    difference = cv2.absdiff(original, anonymized)
    return difference.reshape(*difference.shape[:2], -1).max(axis=2) > levels


def hidden_region(boxes: Iterable[np.ndarray], height: int, width: int, settings: ReplaceConfig) -> np.ndarray:
    """Bool (H, W): what the hide modes replace completely (alpha 1) for faces at ``boxes``
    (the tracker's cover boxes), drawn by the code that hides them."""
    from ..replace import hide_face

    canvas = np.zeros((height, width, 3), np.uint8)
    white = with_fields(settings, solid_color=(255, 255, 255))
    for box in boxes:
        hide_face(canvas, np.asarray(box, np.float32), "solid", white)
    return canvas[..., 0] == 255


def verdict(share: float) -> str:
    """``hidden``, ``partly`` or ``missed`` for an inner-face share (NaN: ``outside``)."""
    if share != share:
        return "outside"
    if share >= HIDDEN_SHARE:
        return "hidden"
    return "missed" if share < MISSED_SHARE else "partly"
