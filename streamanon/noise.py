"""Sensor-noise matching for pasted faces, at the frame's resolution.

A generated face is rendered at 128 px and warped up to the face's size in the frame, so it is
cleaner than its surroundings: on a noisy camera (night, infrared driver monitoring, small
sensors) a smooth face on a grainy frame is the first thing a viewer notices, and a model trained
on the footage learns that faces have no noise. Before a face is blended in, this module measures
the noise of the frame's own pixels where the face goes and adds the missing part to the warped
face, so both read the same on the estimator below.

Noise is modelled per pixel as a grey part common to the three channels (luma noise: what most
sensors and codecs leave) plus an independent part per channel (colour noise), i.e. the RGB
covariance ``a 11^T + diag(b)``. Levels are measured with Immerkaer's estimator: the response to
the 3x3 kernel ``KERNEL`` cancels planes and linear ramps, and the median of its magnitude over
the region, over ``0.6745 * 6``, is the standard deviation of Gaussian noise while ignoring the
few edges of a face. Read on R, G, B and on their mean, the levels give ``b`` and ``a``
(:func:`covariance_parts`); squared levels add over independent Gaussian parts, so the face gets
the parts the frame has and it lacks: ``frame - face`` of each, not below 0.

Only the finest scale is matched. Camera noise is often correlated over a pixel or two
(demosaicking, scaling, compression), and a second, smoother component fitted at half resolution
was tried first: there a face's own structure dominates the estimator (a GRID speaker's clean face
read 3.4 grey levels at half scale against 1.8 for the noise alone), the difference of the two
is no noise level, and the fit added twice the camera's noise (pixel deviation 5.9 against 3.3)
and more frame-to-frame flicker than the original had. White noise matched at the finest scale is
the conservative choice: it adds what white camera noise has, and less than correlated noise has.

The noise comes from one fixed periodic tile (:func:`noise_tile`), read at an offset drawn from a
seed (frame index and track): files come out the same on every run, the grain changes from frame
to frame as a sensor's does, and the device path (:mod:`streamanon.noise_torch`) reads the same
tile, so host and device add the same values.

Only four scalars (the noise levels) are taken from the original face: nothing of its identity.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# Immerkaer (1996): second differences in x and y; zero on planes and linear ramps, sum of squares 36.
KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
# |N(0, s^2) * KERNEL| has median 0.6745 * 6 s.
MEDIAN_TO_SIGMA = 1.0 / (0.6745 * 6.0)
# Histogram of the kernel's magnitudes: bins one level wide, centred on whole numbers. Frames are
# whole grey levels and the kernel's weights whole numbers, so magnitudes are whole numbers too, and
# interpolating inside a bin as wide as that step (the median of grouped data) gives a level that
# moves smoothly with the noise; narrower bins left it on steps of 1 / (0.6745 * 6) = 0.25 levels.
BIN = 1.0
BINS = 1024  # up to a magnitude of 1023 (a noise level of ~250 grey levels)
TILE = 512  # px: period of the noise tile; a face larger than this repeats its grain
MAX_SAMPLES = 40_000  # region pixels a level is measured on at most (every k-th row beyond)
MIN_PIXELS = 64  # fewer region pixels than this: no estimate (no noise added)
OPAQUE = 0.999  # alpha from which a pasted pixel counts as the face's for measuring
# Grey levels: a frame this clean where the face goes gets no noise. Compressed web video reads
# 0.5-0.8 in faces (codec texture and skin, not sensor noise; what could be added is invisible);
# at 0.5, the faint noise added to the shared talking clips moved the identity guard's choices,
# and the privacy audit found 3 leak frames between two re-checks on one of them (0 without it).
CLEAN = 1.0
MAX_SIGMA = 25.0  # grey levels: cap per noise part (an estimate this high is texture, not noise)


def grouped_median(magnitudes: np.ndarray, where: np.ndarray | None = None, channel: int = 0) -> float:
    """Median of the non-negative float32 values of one channel of ``magnitudes`` (``(H, W)`` or
    ``(H, W, C)``; over ``where``, uint8 non-zero, when given), as the median of grouped data: a
    histogram of ``BIN``-wide bins centred on multiples of ``BIN``, interpolated inside the median's
    bin; values past the last bin count in it."""
    magnitudes = np.ascontiguousarray(magnitudes, dtype=np.float32)
    counts = cv2.calcHist([magnitudes], [channel], where, [BINS], [-0.5 * BIN, (BINS - 0.5) * BIN]).ravel()
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
    # Bin k holds [k - 1/2, k + 1/2) BIN; half the values lie below the median.
    return float((k - 0.5 + (total / 2.0 - before) / counts[k]) * BIN)


def channel_sigmas(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Immerkaer noise level (grey levels) of each channel of ``image`` ``(H, W, C)`` over the pixels
    of ``inside`` ``(H, W)`` bool whose 3x3 neighbourhood is inside too; NaN when too few."""
    core = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0)  # fmt: skip
    count = cv2.countNonZero(core)
    if count < MIN_PIXELS:
        return np.full(image.shape[2], np.nan, np.float32)
    if count > MAX_SAMPLES:
        # Every k-th row is enough for a median (standard error ~0.6 % at MAX_SAMPLES) and keeps the
        # histogram's cost flat however large the face is.
        core[np.arange(core.shape[0]) % -(-count // MAX_SAMPLES) != 0] = 0
    response = cv2.filter2D(np.ascontiguousarray(image, dtype=np.float32), -1, KERNEL, borderType=cv2.BORDER_REFLECT)
    magnitudes = np.abs(response).reshape(image.shape)
    return np.array([grouped_median(magnitudes, core, c) * MEDIAN_TO_SIGMA for c in range(image.shape[2])], np.float32)


def noise_levels(rgb: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``(4,)`` noise levels (grey levels) of an RGB region over ``inside``: R, G, B and their mean
    (the grey part's level, plus a third of the colour parts'); NaN where the region is too small."""
    rgb = np.asarray(rgb, dtype=np.float32)
    # The sum rather than the mean: whole numbers for whole-number frames (see BIN).
    levels = channel_sigmas(np.concatenate([rgb, rgb.sum(axis=2, keepdims=True)], axis=2), inside)
    levels[3] /= 3.0
    return levels


def covariance_parts(levels: np.ndarray) -> tuple[float, np.ndarray]:
    """The grey variance ``a`` and the colour variances ``b`` ``(3,)`` of the model ``a 11^T + diag(b)``
    from :func:`noise_levels`: the mean of the channels has variance ``a + sum(b) / 9``, each
    channel ``a + b_i``. Unknown levels count as 0."""
    variances = np.square(np.nan_to_num(np.asarray(levels, np.float64), nan=0.0))
    grey = float(np.clip((9.0 * variances[3] - variances[:3].sum()) / 6.0, 0.0, variances[:3].min()))
    return grey, variances[:3] - grey


@lru_cache(maxsize=1)
def noise_tile() -> np.ndarray:
    """The shared ``(TILE, TILE, 4)`` float32 tile of independent white Gaussian noise (grey, then
    one per colour channel), scaled so that each reads exactly 1 on :func:`channel_sigmas` (built
    once, the same values everywhere)."""
    tile = np.random.default_rng(20261202).standard_normal((TILE, TILE, 4)).astype(np.float32)
    tile /= channel_sigmas(tile, np.ones((TILE, TILE), bool))
    return tile


def window_offset(height: int, width: int, seed: int) -> tuple[int, int]:
    """Top-left tile pixel of a ``(height, width)`` window, drawn from ``seed``; the window stays
    inside the tile wherever it fits, so reading it is a slice."""
    rng = np.random.default_rng(seed)
    top, left = (int(rng.integers(0, max(TILE - size, 0) + 1)) for size in (height, width))
    return top, left


def tile_window(height: int, width: int, seed: int, tile=None):
    """A ``(height, width, 4)`` window of ``tile`` (default :func:`noise_tile`; the device path
    passes its uploaded copy, a tensor) at :func:`window_offset`: a view when it fits in the tile,
    wrapping around it otherwise."""
    tile = noise_tile() if tile is None else tile
    top, left = window_offset(height, width, seed)
    if top + height <= TILE and left + width <= TILE:
        return tile[top : top + height, left : left + width]
    rows, cols = (top + np.arange(height)) % TILE, (left + np.arange(width)) % TILE
    return tile[rows[:, None], cols]


def missing_sigmas(frame_levels: np.ndarray, face_levels: np.ndarray) -> np.ndarray:
    """``(4,)`` deviations of the noise that brings the face's levels to the frame's: the grey part,
    then each channel's own, ``sqrt(frame - face)`` of each part's variance, 0 where the face has
    as much; capped at ``MAX_SIGMA``."""
    frame_grey, frame_colour = covariance_parts(frame_levels)
    face_grey, face_colour = covariance_parts(face_levels)
    missing = np.maximum(np.append(frame_grey - face_grey, frame_colour - face_colour), 0.0)
    return np.minimum(np.sqrt(missing), MAX_SIGMA).astype(np.float32)


def noise_from(sigmas: np.ndarray, height: int, width: int, seed: int) -> np.ndarray:
    """``(height, width, 3)`` float32 RGB noise with the part deviations ``sigmas`` (grey, R, G, B),
    read from the tile at ``seed``."""
    # One 3x4 transform over the region: column 0 adds the grey part to every channel.
    mixing = np.hstack([np.full((3, 1), sigmas[0]), np.diag(sigmas[1:])]).astype(np.float32)
    return cv2.transform(np.ascontiguousarray(tile_window(height, width, seed)), mixing)


def with_noise(replacement: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``replacement`` uint8 plus ``noise``, rounded and clipped to uint8."""
    return np.clip(np.rint(replacement.astype(np.float32) + noise), 0, 255).astype(np.uint8)


def noisy_like(replacement: np.ndarray, original: np.ndarray, alpha: np.ndarray, seed: int) -> np.ndarray:
    """``replacement`` (the warped face, uint8 ``(H, W, 3)``) with the noise it lacks against
    ``original`` (the frame's pixels there), both measured where ``alpha`` ``(H, W)`` is opaque.
    Returned as given when the frame is clean there (below ``CLEAN``) or the face no cleaner."""
    inside = np.asarray(alpha) >= OPAQUE
    frame_levels = noise_levels(original, inside)
    if not np.nanmax(frame_levels[:3], initial=0.0) >= CLEAN:
        return replacement
    sigmas = missing_sigmas(frame_levels, noise_levels(replacement, inside))
    if not sigmas.any():
        return replacement
    return with_noise(replacement, noise_from(sigmas, replacement.shape[0], replacement.shape[1], seed))


def noise_seed(frame_index: int, track_id: int, base: int = 0) -> int:
    """The tile offset seed of a track's face in a frame: different per frame and per track."""
    return int(np.random.SeedSequence([base & 0xFFFFFFFF, frame_index & 0xFFFFFFFF, track_id & 0xFFFFFFFF])
               .generate_state(1)[0])  # fmt: skip
