"""Reduced-resolution shading: shrink a grey stack by whole factors and grow it back.

The shading ``S = BF(gray(I))`` is a wide, smooth filter (diameter 31 at 128 px): it carries the
lighting, not detail. Filtering a copy shrunk by ``factor`` with the window shrunk alike costs
``factor**4`` less (a quarter of the pixels, a quarter of the window each) and, measured on 60
validation crops at factor 2, moves the post-processed output by 0.26 levels on average (99th
percentile 2 of 255; the largest differences sit on sharp hair/background edges).

Both photometric backends call these same functions with their own array module (``numpy`` or
``cupy``), so the CPU reference and the GPU path shrink and grow identically; only the bilateral
filter between the two is backend-specific.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

SHADING_DOWNSAMPLE_FACTORS = (1, 2, 4)


def small_filter_params(diameter: int, sigma_space: float, factor: int) -> tuple[int, float]:
    """Bilateral diameter and spatial sigma for a stack shrunk by ``factor``.

    The radius (OpenCV: ``diameter // 2``) and sigma shrink by ``factor``; the window stays odd
    and at least 3 wide so the filter still smooths.
    """
    if factor == 1:
        return int(diameter), float(sigma_space)
    radius = max(1, math.floor((int(diameter) // 2) / factor + 0.5))
    return 2 * radius + 1, float(sigma_space) / factor


def shrink(gray: Any, factor: int, xp: ModuleType) -> Any:
    """Mean of each ``factor x factor`` block of a (B, H, W) float32 stack.

    Sides that are not multiples of ``factor`` are padded by repeating the last row/column, so
    every output pixel averages exactly ``factor**2`` values.
    """
    b, h, w = gray.shape
    pad_h, pad_w = (-h) % factor, (-w) % factor
    if pad_h or pad_w:
        gray = xp.pad(gray, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    hs, ws = gray.shape[1] // factor, gray.shape[2] // factor
    blocks = gray.reshape(b, hs, factor, ws, factor)
    return xp.ascontiguousarray(blocks.mean(axis=(2, 4), dtype=xp.float32))


def _linear_taps(size_out: int, size_in: int, factor: int, xp: ModuleType) -> tuple[Any, Any, Any]:
    """Lower/upper source index and upper weight of each output pixel along one axis.

    Pixel centres: output ``x`` sits at source coordinate ``(x + 0.5) / factor - 0.5`` (the block
    means of :func:`shrink` sit at block centres); outside the first/last centre the edge value
    is held.
    """
    coord = (xp.arange(size_out, dtype=xp.float32) + xp.float32(0.5)) / xp.float32(factor) - xp.float32(0.5)
    coord = xp.clip(coord, 0.0, float(size_in - 1))
    low = xp.floor(coord).astype(xp.int64)
    high = xp.minimum(low + 1, size_in - 1)
    weight = (coord - low.astype(xp.float32)).astype(xp.float32)
    return low, high, weight


def grow(small: Any, factor: int, height: int, width: int, xp: ModuleType) -> Any:
    """Bilinear enlargement of a (B, h, w) stack made by :func:`shrink` back to (B, height, width)."""
    _, hs, ws = small.shape
    y0, y1, wy = _linear_taps(height, hs, factor, xp)
    x0, x1, wx = _linear_taps(width, ws, factor, xp)
    rows = small[:, y0, :] * (1 - wy)[None, :, None] + small[:, y1, :] * wy[None, :, None]
    out = rows[:, :, x0] * (1 - wx)[None, None, :] + rows[:, :, x1] * wx[None, None, :]
    return xp.ascontiguousarray(out.astype(xp.float32, copy=False))


def reduced_shading(
    gray: Any,
    factor: int,
    bilateral,
    diameter: int,
    sigma_color: float,
    sigma_space: float,
    xp: ModuleType,
) -> Any:
    """``bilateral`` applied to ``gray`` (B, H, W) at 1/``factor`` of its resolution, grown back.

    ``bilateral(stack, diameter, sigma_color, sigma_space)`` is the backend's full-resolution
    filter; ``factor == 1`` calls it directly.
    """
    if factor == 1:
        return bilateral(gray, diameter, sigma_color, sigma_space)
    _, h, w = gray.shape
    small_diameter, small_sigma = small_filter_params(diameter, sigma_space, factor)
    small = bilateral(shrink(gray, factor, xp), small_diameter, sigma_color, small_sigma)
    return grow(small, factor, h, w, xp)
