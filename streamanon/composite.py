"""Compositing replacement pixels into frames without a visible seam.

Masks become alpha mattes whose soft edge lies *inside* the region (:func:`feather`,
:func:`ellipse_mask`): alpha is 0 on the region's border and reaches 1 a feather width inside,
with a smoothstep profile, so the transition has no kink and nothing outside the region changes.
Blending works on an integer region of interest only (:func:`blend`), and aligned crops are
warped back into just the face's bounding box of the frame (:func:`paste_aligned`), so the cost
follows the face size, not the frame size.

Images are RGB ``uint8`` ``(H, W, 3)``; alphas are float32 ``(H, W)`` in [0, 1]; boxes are
``(x1, y1, x2, y2)`` with ``x2``/``y2`` exclusive for integer regions of interest.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .noise import noisy_like

Box = Sequence[int]


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """``3t^2 - 2t^3`` on ``t`` clipped to [0, 1]: a ramp with zero slope at both ends."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def feather(mask: np.ndarray, width_px: float, outside_border: bool = True) -> np.ndarray:
    """Soft-edged alpha for a region: 0 on its border, rising to 1 ``width_px`` pixels further in.

    ``alpha = [mask > 0.5] * mask * smoothstep((d - 1) / width_px)`` where ``d`` is the exact
    Euclidean distance of a pixel of the region (``mask > 0.5``) to the nearest pixel outside it
    (1 for the region's outermost pixels, which thus get alpha 0) and ``smoothstep(t) = 3t^2 - 2t^3``
    on ``t`` clipped to [0, 1]. The soft edge never leaves the region: every pixel with
    ``mask <= 0.5`` gets alpha 0.

    Args:
        mask: ``(H, W)`` region, float in [0, 1] (binary or soft).
        width_px: width of the soft edge in pixels; ``<= 0`` gives a hard edge (the binary region).
        outside_border: treat the pixels beyond the array's edge as outside the region, so alpha
            also falls to 0 where the region touches the edge. Keep True for crops that are pasted
            back into a larger frame (a hard crop edge would show); pass False for masks of a whole
            frame, whose edge is not a border of the face region.

    Returns:
        float32 ``(H, W)`` alpha in [0, 1].
    """
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    region = (mask > 0.5).astype(np.uint8)
    soft = np.clip(mask, 0.0, 1.0)
    if width_px <= 0:
        return region.astype(np.float32) * soft
    padded = cv2.copyMakeBorder(region, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0) if outside_border else region
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    if outside_border:
        distance = distance[1:-1, 1:-1]
    # Without any outside pixel the distances are huge and alpha is 1 throughout.
    alpha = _smoothstep((distance - np.float32(1.0)) / np.float32(width_px)) * region
    return (alpha * soft).astype(np.float32)


def ellipse_mask(
    shape: tuple[int, int],
    box: Sequence[float],
    feather_px: float = 0.0,
    scale: float = 1.0,
) -> np.ndarray:
    """Elliptical alpha inscribed in ``box``, with a soft edge inside the ellipse.

    The ellipse has centre ``c`` = the box centre and semi-axes ``a = scale * w / 2``,
    ``b = scale * h / 2``. With ``r = sqrt(((x - cx) / a)^2 + ((y - cy) / b)^2)`` the distance to
    the ellipse is approximated to first order by ``d = (1 - r) / |grad r|`` and
    ``alpha = smoothstep(d / feather_px)`` (``alpha = [r <= 1]`` when ``feather_px <= 0``).
    Computed analytically at pixel centres, so an ellipse cut by the array edge stays fully opaque
    up to that edge (a face at the frame border is still hidden).

    Args:
        shape: ``(H, W)`` of the output (typically a region of interest of a frame).
        box: ``(x1, y1, x2, y2)`` in the output's pixel coordinates (may extend beyond it).
        feather_px: width of the soft edge in pixels, measured inward from the ellipse.
        scale: grows (> 1) or shrinks (< 1) the ellipse about the box centre.

    Returns:
        float32 ``(H, W)`` alpha in [0, 1].
    """
    height, width = int(shape[0]), int(shape[1])
    x1, y1, x2, y2 = (float(v) for v in box)
    # Pixel i covers [i, i + 1), so its centre is at i + 0.5 in box coordinates.
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    a = max(scale * (x2 - x1) / 2.0, 1e-6)
    b = max(scale * (y2 - y1) / 2.0, 1e-6)
    u = (np.arange(width, dtype=np.float32) + 0.5 - cx) / a
    v = (np.arange(height, dtype=np.float32) + 0.5 - cy) / b
    # Two full-size float32 buffers, updated in place: this runs per hidden face and frame, and the
    # temporaries of the plain expressions tripled its time (7.4 -> 2.5 ms for a 500 px region,
    # the same values bit for bit).
    r = np.add.outer(v * v, u * u)
    np.sqrt(r, out=r)
    if feather_px <= 0:
        return (r <= 1.0).astype(np.float32)
    # |grad r| = sqrt((u / a)^2 + (v / b)^2) / r; guarded at the centre, where d is large anyway.
    grad = np.add.outer((v / b) ** 2, (u / a) ** 2)
    np.sqrt(grad, out=grad)
    grad /= np.maximum(r, 1e-6)
    distance = np.subtract(1.0, r, out=r)
    distance /= np.maximum(grad, 1e-12, out=grad)
    t = np.clip(distance / np.float32(feather_px), 0.0, 1.0, out=distance)
    # smoothstep(t) = t * t * (3 - 2 t), evaluated in that order
    rest = np.subtract(3.0, np.multiply(t, 2.0, out=grad), out=grad)
    t *= t
    t *= rest
    return t


def clip_box(box: Sequence[float], shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Integer region of interest covering ``box`` (floor/ceil), clipped to an image of ``shape``.

    Returns ``None`` when nothing of the box lies inside the image.
    """
    height, width = int(shape[0]), int(shape[1])
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, y1 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
    x2, y2 = min(int(np.ceil(x2)), width), min(int(np.ceil(y2)), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def blend(frame: np.ndarray, replacement: np.ndarray, alpha: np.ndarray, box: Box | None = None) -> None:
    """Alpha-blend ``replacement`` into ``frame`` in place: ``F = F + alpha * (R - F)``.

    Only the integer region of interest ``box = (x1, y1, x2, y2)`` (``x2``, ``y2`` exclusive) is
    read and written; ``None`` means the whole frame. ``replacement`` and ``alpha`` are either the
    size of that region or the size of the whole frame (then the region is cut out of them). The
    result is rounded to the nearest level; pixels with alpha 0 stay bit-identical and pixels with
    alpha 1 become exactly ``replacement``.

    Args:
        frame: ``(H, W, 3)`` uint8, modified in place.
        replacement: ``(h, w, 3)`` or ``(H, W, 3)`` uint8.
        alpha: ``(h, w)`` or ``(H, W)`` float in [0, 1] (clipped to it).
        box: integer region of interest inside the frame, or None.
    """
    if frame.ndim != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, C) uint8, got {frame.dtype} {frame.shape}")
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = (0, 0, width, height) if box is None else (int(v) for v in box)
    if not (0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height):
        raise ValueError(f"box {tuple(box)} is not a region inside the {width}x{height} frame")
    if x2 == x1 or y2 == y1:
        return
    roi_shape = (y2 - y1, x2 - x1)
    replacement = _cut(np.asarray(replacement), roi_shape, frame.shape[:2], (x1, y1, x2, y2), "replacement")
    alpha = _cut(np.asarray(alpha), roi_shape, frame.shape[:2], (x1, y1, x2, y2), "alpha")
    if replacement.shape[2:] != frame.shape[2:] or replacement.dtype != np.uint8:
        raise ValueError(f"replacement must be uint8 {frame.shape[2:]}, got {replacement.dtype} {replacement.shape[2:]}")
    target = frame[y1:y2, x1:x2]
    weight = np.clip(alpha.reshape(roi_shape).astype(np.float32, copy=False), 0.0, 1.0)
    # blendLinear computes (w1 F + w2 R) / (w1 + w2 + 1e-5) with rounding, several times faster than
    # NumPy; with w1 + w2 = 1 the 1e-5 shifts a value by under 0.003 levels, so alpha-0 pixels
    # round back to their own value and alpha-1 pixels to the replacement's.
    target[...] = cv2.blendLinear(target, replacement, 1.0 - weight, weight)


def _cut(array: np.ndarray, roi_shape: tuple[int, int], frame_shape: tuple[int, int], box: Box, name: str) -> np.ndarray:
    """``array`` as given when it is ROI-sized, else its ROI when it is frame-sized."""
    if array.shape[:2] == roi_shape:
        return array
    if array.shape[:2] == frame_shape:
        x1, y1, x2, y2 = box
        return array[y1:y2, x1:x2]
    raise ValueError(f"{name} of shape {array.shape[:2]} matches neither the region {roi_shape} nor the frame {frame_shape}")


def paste_aligned(frame: np.ndarray, crop: np.ndarray, matrix_frame_to_crop: np.ndarray, crop_alpha: np.ndarray,
                  noise_seed: int | None = None) -> None:  # fmt: skip
    """Warp an aligned crop back into ``frame`` and blend it there, in place.

    Only the frame's bounding box of the crop's alpha support is touched: the crop and its alpha
    are inverse-warped into that region with bilinear interpolation (frame pixel ``p`` samples the
    crop at ``M p``; alpha is 0 beyond the crop's edge) and blended there with :func:`blend`.
    ``crop_alpha`` is used as given: pass ``feather(mask, width)`` rather than a hard mask, or
    the face's outline shows as a seam.

    Args:
        frame: ``(H, W, 3)`` uint8, modified in place.
        crop: ``(S, S, 3)`` uint8 aligned face.
        matrix_frame_to_crop: ``(2, 3)`` affine ``M`` mapping frame pixel coordinates to crop ones
            (as in :class:`~streamanon.types.AlignedFace`), invertible.
        crop_alpha: ``(S, S)`` float32 in [0, 1].
        noise_seed: match the frame's sensor noise, reading the noise at this seed (see
            :func:`paste_placed`); None pastes the crop as it is.
    """
    placement = paste_region(frame.shape, matrix_frame_to_crop, crop.shape[:2], crop_alpha)
    if placement is not None:
        paste_placed(frame, crop, *placement, crop_alpha, noise_seed)


def paste_placed(frame: np.ndarray, crop: np.ndarray, roi: tuple[int, int, int, int], local: np.ndarray,
                 crop_alpha: np.ndarray, noise_seed: int | None = None) -> None:  # fmt: skip
    """:func:`paste_aligned` where :func:`paste_region` (or :func:`place_support`) has already given
    the region ``roi`` of ``frame`` and the affine ``local`` from its pixels to the crop's: a
    caller pasting several crops at one place (the identity guard's candidates) places them once.

    ``noise_seed``: when given, the warped crop first gets the sensor noise it lacks against the
    frame's pixels it covers (:func:`streamanon.noise.noisy_like`, read from the noise bank at
    this seed)."""
    x1, y1, x2, y2 = roi
    size = (x2 - x1, y2 - y1)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    # Replicated border for the colour: alpha is what ends the face, not a dark fringe.
    warped = cv2.warpAffine(crop, local, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    warped_alpha = cv2.warpAffine(
        np.asarray(crop_alpha, dtype=np.float32), local, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    warped = warped.reshape(size[1], size[0], -1)
    if noise_seed is not None:
        warped = noisy_like(warped, frame[y1:y2, x1:x2], warped_alpha, noise_seed)
    blend(frame, warped, warped_alpha, box=roi)


def paste_region(
    frame_shape: tuple[int, ...], matrix_frame_to_crop: np.ndarray, crop_shape: tuple[int, ...], crop_alpha: np.ndarray
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Where :func:`paste_aligned` writes: the frame's integer region of interest and the
    ``(2, 3)`` affine from that region's pixels to crop pixels; ``None`` when nothing lands.

    The region is the frame's bounding box of the crop's alpha support grown by one crop pixel
    (bilinear sampling reaches that far), clipped to the frame. Shared by the CPU and the torch
    compositor so both touch exactly the same pixels.
    """
    crop_alpha = np.asarray(crop_alpha, dtype=np.float32)
    if tuple(crop_shape[:2]) != crop_alpha.shape:
        raise ValueError(f"crop {tuple(crop_shape[:2])} and crop_alpha {crop_alpha.shape} differ in size")
    rows, cols = np.nonzero(crop_alpha > 0)
    if rows.size == 0:
        _check_matrix(matrix_frame_to_crop)
        return None
    support = (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))
    return place_support(frame_shape, matrix_frame_to_crop, support)


def feather_support(mask: np.ndarray, width_px: float) -> tuple[int, int, int, int] | None:
    """Bounding box ``(col0, row0, col1, row1)`` (inclusive) of the pixels where
    ``feather(mask, width_px, outside_border=True) > 0``, without computing the alpha; ``None``
    when there are none.

    Those pixels are the region ``mask > 0.5`` less its outermost layer: a pixel with a 4-neighbour
    outside the region (or beyond the array's edge) is at distance 1 and gets alpha 0, every other
    one is at least sqrt(2) away and gets a positive alpha. With ``width_px <= 0`` it is the region.
    The device compositor uses it to place faces while their alphas are computed on the device.
    """
    region = (np.asarray(mask, dtype=np.float32) > 0.5).astype(np.uint8)
    if width_px > 0:
        cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
        region = cv2.erode(region, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    x, y, w, h = cv2.boundingRect(region)
    if w == 0 or h == 0:
        return None
    return x, y, x + w - 1, y + h - 1


def place_support(
    frame_shape: tuple[int, ...], matrix_frame_to_crop: np.ndarray, support: tuple[int, int, int, int]
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """:func:`paste_region` for an alpha whose support has the bounding box ``support``
    (``(col0, row0, col1, row1)``, inclusive, in crop pixels)."""
    (a, b, tx), (c, d, ty) = _check_matrix(matrix_frame_to_crop).tolist()
    det = a * d - b * c
    # Bilinear sampling reaches one crop pixel beyond the support; map that box's corners to the
    # frame with the inverse of the 2x2 part (plain floats: this runs per face and frame).
    cx0, cy0, cx1, cy1 = support[0] - 1, support[1] - 1, support[2] + 1, support[3] + 1
    xs, ys = [], []
    for u, v in ((cx0, cy0), (cx1, cy0), (cx1, cy1), (cx0, cy1)):
        u, v = u - tx, v - ty
        xs.append((d * u - b * v) / det)
        ys.append((a * v - c * u) / det)
    roi = clip_box((min(xs), min(ys), max(xs) + 1.0, max(ys) + 1.0), frame_shape)
    if roi is None:
        return None
    x1, y1 = roi[0], roi[1]
    # Frame pixel p = p_roi + (x1, y1), so the crop is sampled at M p = A p_roi + (A (x1, y1) + t).
    local = np.array([[a, b, a * x1 + b * y1 + tx], [c, d, c * x1 + d * y1 + ty]], dtype=np.float64)
    return roi, local


def _check_matrix(matrix_frame_to_crop: np.ndarray) -> np.ndarray:
    """The frame-to-crop affine as float64 ``(2, 3)``; raises on a wrong shape or a singular one."""
    matrix = np.asarray(matrix_frame_to_crop, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must be (2, 3), got {matrix.shape}")
    if abs(matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0]) < 1e-12:
        raise ValueError("matrix_frame_to_crop is singular")
    return matrix
