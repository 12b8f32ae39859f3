"""Sensor-noise matching for pasted faces, at the frame's resolution.

A generated face is rendered at 128 px and warped up to the face's size in the frame, so it is
cleaner than its surroundings: on a noisy camera (night, infrared driver monitoring, small
sensors) a smooth face on a grainy frame is the first thing a viewer notices, and a model trained
on the footage learns that faces have no noise. Before a face is blended in, this module measures
the noise of the frame's own pixels where the face goes and adds the missing part to the warped
face, so both read the same on the estimator below.

Noise is modelled in YCbCr (BT.601 full range, as JPEG) as two independent Gaussian components
per channel: white noise and a smooth one (white noise blurred with a Gaussian of
``SMOOTH_SIGMA`` px: compressed or upscaled video has correlated noise). Levels are measured at
two scales, the region itself and its 2x2 mean, with Immerkaer's estimator (the response to the
3x3 kernel ``K`` below cancels planes and linear ramps; the median of its magnitude over the
region, over ``0.6745 * 6``, is the standard deviation of Gaussian noise and ignores the few edges
of a face). The estimator's squared responses add over independent components, so the two
components' variances follow from the frame's minus the pasted face's variances by a 2x2
non-negative least-squares solve.

The noise itself comes from a fixed bank of periodic tiles (:class:`NoiseBank`), read at an offset
drawn from a seed (frame index and track): files come out the same on every run, the grain
changes from frame to frame as a sensor's does, and the device path (:mod:`streamanon.noise_torch`)
reads the same tiles, so host and device add the same values.

Only scalars (six noise levels) are taken from the original face: nothing of its identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

# RGB -> YCbCr (BT.601, full range) without the offsets: noise is a difference, offsets cancel.
RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32
)
YCC_TO_RGB = np.linalg.inv(RGB_TO_YCC.astype(np.float64)).astype(np.float32)
# Immerkaer (1996): second differences in x and y; zero on planes and linear ramps, sum of squares 36.
KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
# |N(0, s^2) * KERNEL| has median 0.6745 * 6 s.
MEDIAN_TO_SIGMA = 1.0 / (0.6745 * 6.0)
# Histogram of the kernel's magnitudes: bins of 1/8 level up to 256 levels (noise sigma ~63).
BIN = 0.125
BINS = 2048
SMOOTH_SIGMA = 1.0  # px: blur of the correlated component
TILE = 512  # px: period of the noise tiles; a face larger than this repeats its grain
MAX_SAMPLES = 40_000  # region pixels a level is measured on at most (every k-th row beyond)
MIN_PIXELS = 64  # fewer region pixels than this at a scale: no estimate (no noise added)
OPAQUE = 0.999  # alpha from which a pasted pixel counts as the face's for measuring
# Grey levels: a frame this clean at both scales gets no noise (what could be missing is below
# rounding), which also saves measuring the face on clean, compressed video.
CLEAN = 0.5
MAX_SIGMA = 25.0  # grey levels: cap per component (an estimate this high is texture, not noise)


def to_ycc(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` RGB (any numeric dtype) -> float32 YCbCr without offsets."""
    return cv2.transform(np.asarray(rgb, dtype=np.float32), RGB_TO_YCC)


def half_scale(image: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2x2 mean of ``image`` ``(H, W, C)`` float32 and the cells all of whose four pixels are
    ``inside`` (an odd last row or column is dropped)."""
    height, width = image.shape[0] // 2, image.shape[1] // 2
    # INTER_AREA at exactly 1/2 is the 2x2 mean (and ~10x faster than a NumPy reshape-mean).
    mean = cv2.resize(image[: 2 * height, : 2 * width], (width, height), interpolation=cv2.INTER_AREA)
    cells = cv2.resize(inside[: 2 * height, : 2 * width].astype(np.uint8) * 255, (width, height),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    return mean.reshape(height, width, -1), cells == 255


def grouped_median(magnitudes: np.ndarray, where: np.ndarray | None = None, channel: int = 0) -> float:
    """Median of the non-negative float32 values of one channel of ``magnitudes`` (``(H, W)`` or
    ``(H, W, C)``; over ``where``, uint8 non-zero, when given), from a histogram of ``BIN``-wide
    bins, interpolated inside the median's bin (linear in the values, unlike the plain median of
    coarse integer data); values past the last bin count in it."""
    magnitudes = np.ascontiguousarray(magnitudes, dtype=np.float32)
    counts = cv2.calcHist([magnitudes], [channel], where, [BINS], [0.0, BINS * BIN]).ravel()
    # calcHist leaves out what lies past its range: those values belong to the last bin.
    counted = cv2.countNonZero(where) if where is not None else magnitudes.shape[0] * magnitudes.shape[1]
    counts[-1] += counted - counts.sum()
    return _median_of_counts(counts)


def _median_of_counts(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return float("nan")
    cumulative = np.cumsum(counts)
    k = int(np.searchsorted(cumulative, total / 2.0))
    before = cumulative[k - 1] if k > 0 else 0
    return float((k + (total / 2.0 - before) / counts[k]) * BIN)


def channel_sigmas(ycc: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Immerkaer noise level (grey levels) of each channel of ``ycc`` ``(H, W, C)`` over the pixels
    of ``inside`` ``(H, W)`` bool whose 3x3 neighbourhood is inside too; NaN when too few."""
    core = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0)  # fmt: skip
    count = cv2.countNonZero(core)
    if count < MIN_PIXELS:
        return np.full(ycc.shape[2], np.nan, np.float32)
    if count > MAX_SAMPLES:
        # Every k-th row is enough for a median (standard error ~0.6 % at MAX_SAMPLES) and keeps the
        # histogram's cost flat however large the face is.
        core[np.arange(core.shape[0]) % -(-count // MAX_SAMPLES) != 0] = 0
    response = cv2.filter2D(np.ascontiguousarray(ycc, dtype=np.float32), -1, KERNEL, borderType=cv2.BORDER_REFLECT)
    magnitudes = np.abs(response).reshape(ycc.shape)
    return np.array([grouped_median(magnitudes, core, c) * MEDIAN_TO_SIGMA for c in range(ycc.shape[2])], np.float32)


def noise_levels(rgb: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``(2, 3)`` noise levels of an RGB region over ``inside``: rows full and half scale, columns
    Y, Cb, Cr (grey levels; NaN where the region is too small at that scale)."""
    ycc = to_ycc(rgb)
    half, half_inside = half_scale(ycc, inside)
    return np.stack([channel_sigmas(ycc, inside), channel_sigmas(half, half_inside)])


@dataclass(frozen=True)
class NoiseBank:
    """Two periodic ``(TILE, TILE, 3)`` float32 tiles of unit-variance Gaussian noise (``white``,
    and ``smooth``: white blurred by ``SMOOTH_SIGMA`` px, circularly) and ``response`` ``(2, 2)``:
    the estimator's level of each tile (columns) at full and half scale (rows), measured on them."""

    white: np.ndarray
    smooth: np.ndarray
    response: np.ndarray

    def window(self, height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A ``(height, width, 3)`` window of each tile at the offset :func:`window_offset` draws
        from ``seed`` (a view when it fits in the tile; wrapping around it otherwise)."""
        top, left = window_offset(height, width, seed)
        if top + height <= TILE and left + width <= TILE:
            return (self.white[top : top + height, left : left + width],
                    self.smooth[top : top + height, left : left + width])  # fmt: skip
        rows, cols = (top + np.arange(height)) % TILE, (left + np.arange(width)) % TILE
        return self.white[rows[:, None], cols], self.smooth[rows[:, None], cols]


@lru_cache(maxsize=1)
def noise_bank() -> NoiseBank:
    """The shared bank (built once, ~50 ms; the same values on every machine: fixed seed, float64 FFT)."""
    rng = np.random.default_rng(20261202)
    white = rng.standard_normal((TILE, TILE, 3))
    other = rng.standard_normal((TILE, TILE, 3))
    frequencies = np.fft.fftfreq(TILE)
    gain = np.exp(-2.0 * (np.pi * SMOOTH_SIGMA) ** 2 * np.add.outer(frequencies**2, frequencies**2))
    smooth = np.real(np.fft.ifft2(np.fft.fft2(other, axes=(0, 1)) * gain[..., None], axes=(0, 1)))
    smooth /= smooth.std(axis=(0, 1), keepdims=True)
    white, smooth = white.astype(np.float32), smooth.astype(np.float32)
    everywhere = np.ones((TILE, TILE), bool)
    # Measured through RGB_TO_YCC's inverse and back, exactly as levels are measured on frames.
    response = np.stack(
        [noise_levels(tile @ YCC_TO_RGB.T, everywhere).mean(axis=1) for tile in (white, smooth)], axis=1
    )
    return NoiseBank(white, smooth, response.astype(np.float32))


def window_offset(height: int, width: int, seed: int) -> tuple[int, int]:
    """Top-left tile pixel of a ``(height, width)`` window, drawn from ``seed``; the window stays
    inside the tile wherever it fits, so reading it is a slice."""
    rng = np.random.default_rng(seed)
    top, left = (int(rng.integers(0, max(TILE - size, 0) + 1)) for size in (height, width))
    return top, left


def component_sigmas(frame_levels: np.ndarray, face_levels: np.ndarray, response: np.ndarray) -> np.ndarray:
    """``(2, 3)`` standard deviations of the white (row 0) and smooth (row 1) noise to add per
    YCbCr channel so that the face's levels reach the frame's, by non-negative least squares on
    the squared levels at both scales; 0 where the frame is the cleaner or a level is unknown."""
    missing = np.maximum(np.square(frame_levels) - np.square(face_levels), 0.0)  # (2 scales, 3)
    missing = np.where(np.isfinite(missing), missing, 0.0)
    design = np.square(response.astype(np.float64))  # scale x component
    out = np.zeros((2, missing.shape[1]))
    for channel in range(missing.shape[1]):
        out[:, channel] = _nonnegative_solve(design, missing[:, channel])
    return np.minimum(np.sqrt(out), MAX_SIGMA).astype(np.float32)


def _nonnegative_solve(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative ``v`` (2,) minimising ``|design v - target|`` (the 2x2 case of NNLS)."""
    if not target.any():
        return np.zeros(2)
    candidates = []
    try:
        exact = np.linalg.solve(design, target)
        if (exact >= 0).all():
            return exact
    except np.linalg.LinAlgError:
        pass
    for column in range(2):
        v = np.zeros(2)
        a = design[:, column]
        v[column] = max(float(a @ target) / float(a @ a), 0.0)
        candidates.append(v)
    return min(candidates, key=lambda v: float(np.sum((design @ v - target) ** 2)))


def noise_from(sigmas: np.ndarray, height: int, width: int, seed: int) -> np.ndarray:
    """``(height, width, 3)`` float32 RGB noise with the YCbCr component deviations ``sigmas``
    (rows white and smooth, as :func:`component_sigmas` gives them), read from the bank at ``seed``."""
    white, smooth = noise_bank().window(height, width, seed)
    # Scaling folded into the YCbCr -> RGB matrix: two 3x3 transforms over the region.
    white = cv2.transform(np.ascontiguousarray(white), YCC_TO_RGB * sigmas[0])
    return cv2.add(white, cv2.transform(np.ascontiguousarray(smooth), YCC_TO_RGB * sigmas[1]))


def with_noise(replacement: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``replacement`` uint8 plus ``noise``, rounded and clipped to uint8."""
    return np.clip(np.rint(replacement.astype(np.float32) + noise), 0, 255).astype(np.uint8)


def noisy_like(replacement: np.ndarray, original: np.ndarray, alpha: np.ndarray, seed: int) -> np.ndarray:
    """``replacement`` (the warped face, uint8 ``(H, W, 3)``) with the noise it lacks against
    ``original`` (the frame's pixels there), both measured where ``alpha`` ``(H, W)`` is opaque.
    Returned as given when the frame is clean there (below ``CLEAN`` at both scales)."""
    inside = np.asarray(alpha) >= OPAQUE
    frame_levels = noise_levels(original, inside)
    if not np.nanmax(frame_levels, initial=0.0) >= CLEAN:
        return replacement
    sigmas = component_sigmas(frame_levels, noise_levels(replacement, inside), noise_bank().response)
    if not sigmas.any():
        return replacement
    return with_noise(replacement, noise_from(sigmas, replacement.shape[0], replacement.shape[1], seed))


def noise_seed(frame_index: int, track_id: int, base: int = 0) -> int:
    """The bank offset seed of a track's face in a frame: different per frame and per track."""
    return int(np.random.SeedSequence([base & 0xFFFFFFFF, frame_index & 0xFFFFFFFF, track_id & 0xFFFFFFFF])
               .generate_state(1)[0])  # fmt: skip
