"""Baseline ways to hide a face region: blur, pixelate, solid fill.

Also the fail-closed fallback of ``generate`` mode: a tracked face that cannot be generated in a
frame is blurred here. Each function works on a region of interest only, so the cost depends on
the face size, not the frame size.
"""

from __future__ import annotations

import cv2
import numpy as np

from .composite import blend, clip_box, ellipse_mask
from .config import ReplaceConfig

# Blur shrinks the hidden region to this many cells across before smoothing it back up:
# 3 leaves only shading and skin tone (measured: every face of the street clip moves further
# from its original in dlib embedding space than at 6), and the cost no longer grows with face size.
_BLUR_CELLS = 3
# Working resolution of the blur's smoothing, in pixels per cell.
_BLUR_WORK_PX = 8


def expand_box(box: np.ndarray, margin: float) -> np.ndarray:
    """Grow ``box`` by ``margin`` of its size on each side (float x1 y1 x2 y2, not clipped)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return np.array([x1 - dx, y1 - dy, x2 + dx, y2 + dy], dtype=np.float32)


def hide_ellipse(box: np.ndarray, margin: float) -> np.ndarray:
    """Bounding box of the hidden ellipse: the one through the corners of the grown face box.

    Scaling the grown box by sqrt(2) about its centre gives the ellipse that circumscribes it, so
    the whole face box, corners included, lies well inside (before the soft edge starts).
    """
    grown = expand_box(box, margin)
    centre = (grown[:2] + grown[2:]) / 2.0
    half = (grown[2:] - grown[:2]) / 2.0 * np.sqrt(2.0)
    return np.concatenate([centre - half, centre + half]).astype(np.float32)


def blurred(patch: np.ndarray) -> np.ndarray:
    """A strongly blurred copy of ``patch``: down to a few cells, then smooth upsampling."""
    h, w = patch.shape[:2]
    cells_x = max(1, min(_BLUR_CELLS, w))
    cells_y = max(1, min(_BLUR_CELLS, h))
    small = cv2.resize(patch, (cells_x, cells_y), interpolation=cv2.INTER_AREA)
    # Smooth at a low working size (_BLUR_WORK_PX per cell), then upsample linearly: as smooth as
    # a Gaussian at full size, but the cost no longer grows with the face (a full-size Gaussian
    # of a 1080p face took ~40 ms).
    work_w, work_h = min(w, cells_x * _BLUR_WORK_PX), min(h, cells_y * _BLUR_WORK_PX)
    up = cv2.resize(small, (work_w, work_h), interpolation=cv2.INTER_LINEAR)
    # Linear upsampling leaves a faint grid; a Gaussian of half a cell width removes it.
    sigma = max(work_w / cells_x, work_h / cells_y) / 2.0
    up = cv2.GaussianBlur(up, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
    if (work_w, work_h) == (w, h):
        return up
    return cv2.resize(up, (w, h), interpolation=cv2.INTER_LINEAR)


def pixelated(patch: np.ndarray, blocks: int) -> np.ndarray:
    """``patch`` as a mosaic of about ``blocks`` squares across its longer side."""
    h, w = patch.shape[:2]
    scale = max(1, blocks) / max(h, w)
    small = cv2.resize(patch, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def hide_face(frame: np.ndarray, box: np.ndarray, mode: str, cfg: ReplaceConfig) -> None:
    """Hide the face in ``box`` of ``frame`` in place with ``mode`` (blur, pixelate or solid).

    The replaced region is the ellipse through the corners of the box grown by ``cfg.margin``;
    its soft edge (``cfg.feather`` of the face size wide) lies between the grown box and the
    ellipse, so every pixel of the face box itself is fully replaced, also at the frame border.
    """
    height, width = frame.shape[:2]
    ellipse = hide_ellipse(box, cfg.margin)
    roi = clip_box(ellipse, (height, width))
    if roi is None:
        return
    x1, y1, x2, y2 = roi
    patch = frame[y1:y2, x1:x2]
    if mode == "blur":
        replacement = blurred(patch)
    elif mode == "pixelate":
        replacement = pixelated(patch, cfg.pixel_blocks)
    elif mode == "solid":
        replacement = np.empty_like(patch)
        replacement[:] = np.asarray(cfg.solid_color, dtype=np.uint8)
    else:
        raise ValueError(f"hide_face cannot do mode '{mode}'")
    # The ellipse is placed unclipped (it may extend past the frame), so it stays opaque up to the edge.
    local = ellipse - np.array([x1, y1, x1, y1], dtype=np.float32)
    feather_px = cfg.feather * float(min(box[2] - box[0], box[3] - box[1]))
    alpha = ellipse_mask(patch.shape[:2], local, feather_px=feather_px)
    blend(frame, replacement, alpha, box=roi)
