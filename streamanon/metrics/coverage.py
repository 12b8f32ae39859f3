"""Did the anonymization cover the face? Recall against annotated faces, for every mode.

A face counts as hidden by the share of its *inner face* (the convex hull of the 68-point
annotation without the jaw line: brows, eyes, nose and mouth, what identifies a person) that no
longer shows the original's pixels. Two ways to tell which pixels those are:

- :func:`hidden_region`: the region the hide modes (blur, pixelate, solid) replace completely,
  from the tracker's boxes and the same code that hides them (:func:`streamanon.replace.hide_face`);
- :func:`changed_pixels`: pixels that differ from the original by more than ``CHANGED_LEVELS``
  grey levels (the larger channel), on average over a window around them, for any mode (generate
  included). Per pixel, a generated face that keeps the original's colour and lighting crosses the
  original's values along thin contours, and 5-7 % of a HELEN face's inner pixels then read as
  "unchanged" though every one was replaced; averaged over a window a tenth of the eye distance
  wide (:func:`change_window`), only a patch that really still shows the original stays unchanged.
"""

from __future__ import annotations

from dataclasses import replace as with_fields
from typing import Iterable

import cv2
import numpy as np

from ..config import ReplaceConfig

INNER_FACE = slice(17, 68)  # brows, nose, eyes, mouth (dlib / iBUG 68-point order)
CHANGED_LEVELS = 2  # a pixel within this many levels of the original in every channel still shows it
CHANGE_WINDOW_IOD = 0.1  # side of the window changes are averaged over, in inter-ocular distances
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
    """Share of the inner face of ``landmarks68`` that ``hidden`` (bool (H, W)) covers, counting its
    pixels inside the image (the others are not shown); NaN for a face wholly outside."""
    face = inner_face_mask(landmarks68, *hidden.shape)
    inside = int(face.sum())
    return float(hidden[face].sum() / inside) if inside else float("nan")


def change_window(landmarks68: np.ndarray) -> int:
    """Odd window side (px) for :func:`changed_pixels` on the face of ``landmarks68``:
    ``CHANGE_WINDOW_IOD`` of its outer-eye-corner distance, at least 1."""
    points = np.asarray(landmarks68, np.float64)
    eyes = float(np.linalg.norm(points[45] - points[36]))
    return 2 * int(round(CHANGE_WINDOW_IOD * eyes / 2.0)) + 1


def changed_pixels(original: np.ndarray, anonymized: np.ndarray, levels: int = CHANGED_LEVELS,
                   window: int = 1) -> np.ndarray:  # fmt: skip
    """Bool (H, W): pixels where ``anonymized`` differs from ``original`` by more than ``levels``
    (the larger channel's difference, averaged over a ``window`` x ``window`` box; 1: per pixel)."""
    if original.shape != anonymized.shape:
        raise ValueError(f"images differ in shape: {original.shape} vs {anonymized.shape}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number of pixels, got {window}")
    difference = cv2.absdiff(original, anonymized)
    largest = difference.reshape(*difference.shape[:2], -1).max(axis=2)
    if window > 1:
        largest = cv2.blur(largest.astype(np.float32), (window, window), borderType=cv2.BORDER_REPLICATE)
    return largest > levels


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
