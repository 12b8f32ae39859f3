"""What the generator is conditioned on: the masked crop, the mask, landmark heatmaps, a latent.

Tensor functions here are pure (no state) so that the generator, the discriminator, the trainer
and the runtime share one definition of each condition. Images are float tensors in [-1, 1],
shape (B, 3, S, S); masks are (B, 1, S, S) in [0, 1]; landmarks are (B, 68, 2) crop pixels
in dlib order with pixel centres at integer coordinates.
"""

from __future__ import annotations

import numpy as np
import torch

# Contiguous index ranges of the 68 iBUG/dlib points that form one facial part.
LANDMARK_GROUPS: tuple[tuple[int, int], ...] = (
    (0, 17),  # jaw line
    (17, 22),  # right eyebrow (subject's right, image left)
    (22, 27),  # left eyebrow
    (27, 31),  # nose bridge
    (31, 36),  # lower nose
    (36, 42),  # right eye
    (42, 48),  # left eye
    (48, 60),  # outer lips
    (60, 68),  # inner lips
)

HEATMAP_MODES = ("groups", "points")

# A pixel counts as "face to replace" as soon as its mask weight exceeds this. Near zero on
# purpose: the soft edge of the mask is blended with generated pixels by the compositor, so
# the generator must not see the original there either (privacy beats context).
MASK_EPSILON = 1e-3


def heatmap_channels(mode: str) -> int:
    """Number of heatmap channels that ``mode`` produces."""
    if mode == "groups":
        return len(LANDMARK_GROUPS)
    if mode == "points":
        return 68
    raise ValueError(f"unknown heatmap mode '{mode}' (choose from {', '.join(HEATMAP_MODES)})")


def landmark_heatmaps(landmarks: torch.Tensor, size: int, sigma: float, mode: str = "groups") -> torch.Tensor:
    """Render landmarks as Gaussian heatmaps, (B, 68, 2) crop pixels -> (B, C, size, size) float32.

    ``mode="points"`` gives one channel per landmark (C = 68). ``mode="groups"`` (C = 9, the
    default of the generator) takes the maximum of the points of each facial part: the part
    channels keep left/right and eye/mouth apart, which is what pose and expression need, while
    the first convolution of the generator runs on 13 instead of 72 input channels. Peaks are 1.
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (B, 68, 2), got {tuple(landmarks.shape)}")
    # float32 on purpose: squared distances of a 256 px crop overflow float16.
    points = landmarks.float()
    grid = torch.arange(size, device=landmarks.device, dtype=torch.float32)
    scale = -0.5 / (sigma * sigma)
    # The 2-D Gaussian is separable: an outer product of two 1-D profiles is cheaper than
    # evaluating the distance of every pixel to every point.
    gx = torch.exp(scale * (grid.view(1, 1, -1) - points[..., 0:1]) ** 2)  # (B, 68, S)
    gy = torch.exp(scale * (grid.view(1, 1, -1) - points[..., 1:2]) ** 2)  # (B, 68, S)
    maps = gy.unsqueeze(-1) * gx.unsqueeze(-2)  # (B, 68, S, S)
    if mode == "points":
        return maps
    if mode != "groups":
        raise ValueError(f"unknown heatmap mode '{mode}' (choose from {', '.join(HEATMAP_MODES)})")
    return torch.stack([maps[:, a:b].amax(dim=1) for a, b in LANDMARK_GROUPS], dim=1)


def binary_mask(mask: torch.Tensor) -> torch.Tensor:
    """The hard face region (1 = replace) of a soft mask in [0, 1], same shape and dtype."""
    return (mask > MASK_EPSILON).to(mask.dtype)


def masked_input(crop: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The crop with every pixel of the face region set to 0 (mid grey in [-1, 1]).

    Uses ``torch.where`` rather than a product so that no value inside the mask (not even a NaN
    or an inf) can reach the generator: its output cannot depend on the original face.
    """
    hard = binary_mask(mask) > 0
    return torch.where(hard, torch.zeros((), dtype=crop.dtype, device=crop.device), crop)


def track_latent(track_id: int, seed: int, dim: int, attempt: int = 0) -> np.ndarray:
    """The latent code of one track: standard normal (dim,) float32, fixed per (seed, track_id).

    The same track keeps its fake identity across frames and runs; different tracks (or seeds)
    draw independent codes. ``attempt`` > 0 gives the track's further candidates, independent of
    the first (the identity guard picks among them).
    """
    # SeedSequence wants non-negative entropy; fold negative ids into the unsigned 64-bit range.
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, int(track_id) & 0xFFFFFFFFFFFFFFFF]
    if attempt:
        entropy.append(int(attempt) & 0xFFFFFFFFFFFFFFFF)
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    return rng.standard_normal(dim).astype(np.float32)


def track_latents(track_ids, seed: int, dim: int) -> np.ndarray:
    """Latent codes of several tracks stacked as (B, dim) float32."""
    if len(track_ids) == 0:
        return np.zeros((0, dim), np.float32)
    return np.stack([track_latent(t, seed, dim) for t in track_ids])
