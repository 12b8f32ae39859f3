"""Fine detail: how much of the original face's fine luminance structure the anonymized face has.

``detail_ratio`` is the energy of a band-pass of the luminance (difference of Gaussians, sigma 1
and 2 px of the 128 px metric crop: skin texture, eyelids, lip and brow edges) inside the face,
anonymized over original, on the same aligned crop pair. A band rather than a pixel Laplacian:
the metric crops are resampled from frames of any size, and the top octave is mostly their
resampling. A blurred or smooth face scores near 0, a face as sharp as the original about 1;
more than 1 means harder edges or noise than the original, so it describes texture, not realism
on its own. On the talking clip (``talking_512_katiehill.mp4``, first 60 frames, 2026-12-02) the
appearance generator scores 0.07 without its fitted detail and 0.16 with it (blur 0.0002, pixelate
0.10): the 128 px generator is still far smoother than a sharp 480 px face.

``noise_ratio`` is the other end of the spectrum, at the frame's own resolution: the noise level
of the channels' mean (:func:`streamanon.noise.noise_levels`, Immerkaer's estimator) inside the face's landmark
hull, anonymized over original. A face pasted without the camera's noise scores well below 1 on
a noisy clip; it is undefined (NaN) on an original cleaner than ``noise.CLEAN`` grey levels,
where there is no noise to match (most compressed web video).
"""

from __future__ import annotations

import cv2
import numpy as np

from .. import noise
from . import regions

LUMA = np.array([0.299, 0.587, 0.114])
BAND_SIGMAS = (1.0, 2.0)  # px of the metric crop (metrics.regions.CROP_SIZE)
FLAT_ENERGY = 1e-6  # (grey levels)^2: an original this flat has no detail to compare with (rounding noise)
# The hull mask's border is where a pasted face meets its surroundings: its edge is not detail.
ERODE_PX = 5


def detail_energy(crop: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared band-pass of the luminance (0-255 units) of an (S, S, 3) crop inside ``mask``."""
    gray = np.asarray(crop, np.float64) @ LUMA
    band = cv2.GaussianBlur(gray, (0, 0), BAND_SIGMAS[0]) - cv2.GaussianBlur(gray, (0, 0), BAND_SIGMAS[1])
    inside = cv2.erode((np.asarray(mask) > 0.5).astype(np.uint8), np.ones((2 * ERODE_PX + 1,) * 2, np.uint8)) > 0
    return float(np.mean(band[inside] ** 2)) if inside.any() else float("nan")


def detail_ratio(crop_original: np.ndarray, crop_anonymized: np.ndarray, mask: np.ndarray) -> float:
    """Fine-detail energy of the anonymized crop over the original's; NaN for an empty or flat original."""
    original = detail_energy(crop_original, mask)
    if not np.isfinite(original) or original < FLAT_ENERGY:
        return float("nan")
    return detail_energy(crop_anonymized, mask) / original


# The hull's outer part is where a pasted face's soft edge mixes it with the frame: measured inside.
NOISE_ERODE = 0.08  # of the landmarks' larger extent


def noise_ratio(original: np.ndarray, anonymized: np.ndarray, landmarks68: np.ndarray) -> float:
    """Noise level of the channels' mean of ``anonymized`` over ``original`` (RGB frames of one
    size) inside the landmark hull, eroded by ``NOISE_ERODE`` of the face's size; NaN for a clean
    original or a face too small to measure."""
    height, width = original.shape[:2]
    x1, y1, x2, y2 = regions.box_of(landmarks68, height, width, margin=0.0)
    if x2 <= x1 or y2 <= y1:
        return float("nan")
    points = np.asarray(landmarks68, np.float64) - [x1, y1]
    hull = regions.hull_mask(points, y2 - y1, x2 - x1).astype(np.uint8)
    reach = max(1, int(round(NOISE_ERODE * float(np.ptp(points, axis=0).max()))))
    inside = cv2.erode(hull, np.ones((2 * reach + 1,) * 2, np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0) > 0  # fmt: skip
    before = noise.noise_levels(original[y1:y2, x1:x2], inside)[3]
    if not before >= noise.CLEAN:
        return float("nan")
    return float(noise.noise_levels(anonymized[y1:y2, x1:x2], inside)[3] / before)
