"""Torch twins of :func:`streamanon.composite.paste_aligned` and :func:`~streamanon.composite.feather`:
paste aligned crops back into a frame that lives on the accelerator (CUDA on a GPU machine; CPU
tensors in the tests), and compute their alphas there, all faces of a frame at once.

Same arguments and the same pixels touched as the OpenCV version (both are placed by
:func:`streamanon.composite.paste_region`, or :func:`~streamanon.composite.place_support` from a
mask), so the pipeline can keep a frame on the GPU from
upload to download: the generated crops never cross to the host. Differences to the reference
are rounding only: OpenCV's ``warpAffine`` samples at 1/32-pixel steps with fixed-point weights
and rounds the warped crop before blending; here sampling and blending stay in float32 and the
result is rounded once (tests/test_composite_torch.py bounds the difference). :func:`feather`
gives the reference's alphas exactly.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import noise_torch
from .composite import paste_region
from .gpu import upload

Placement = tuple[tuple[int, int, int, int], np.ndarray]


def paste_aligned(frame: torch.Tensor, crop: torch.Tensor, matrix_frame_to_crop: np.ndarray, crop_alpha: np.ndarray,
                  noise_seed: int | None = None) -> None:  # fmt: skip
    """Warp an aligned crop back into ``frame`` and blend it there, in place.

    Args:
        frame: ``(H, W, 3)`` uint8 tensor, modified in place.
        crop: ``(S, S, 3)`` uint8 tensor (any device; moved to ``frame``'s).
        matrix_frame_to_crop: ``(2, 3)`` affine mapping frame pixels to crop pixels, invertible.
        crop_alpha: ``(S, S)`` float32 host array in [0, 1] (e.g. ``composite.feather``); its
            support decides the region written, on the host, so nothing waits on the device.
        noise_seed: match the frame's sensor noise (:mod:`streamanon.noise_torch`), reading the
            noise at this seed; None pastes the crop as it is.
    """
    if frame.ndim != 3 or frame.dtype != torch.uint8:
        raise ValueError(f"frame must be an (H, W, C) uint8 tensor, got {frame.dtype} {tuple(frame.shape)}")
    if crop.ndim != 3 or crop.shape[2] != frame.shape[2]:
        raise ValueError(f"crop must be (S, S, {frame.shape[2]}), got {tuple(crop.shape)}")
    placement = paste_region(tuple(frame.shape), matrix_frame_to_crop, tuple(crop.shape), crop_alpha)
    if placement is not None:
        paste_placed(frame, crop, *placement, crop_alpha, noise_seed)


def paste_placed(frame: torch.Tensor, crop: torch.Tensor, roi: tuple[int, int, int, int], local: np.ndarray,
                 crop_alpha: np.ndarray, noise_seed: int | None = None) -> None:  # fmt: skip
    """:func:`paste_aligned` where :func:`~streamanon.composite.paste_region` has already given
    the region ``roi`` of ``frame`` and the affine ``local`` from its pixels to the crop's."""
    alpha = upload(np.asarray(crop_alpha, dtype=np.float32), frame.device)
    paste_placed_batch(frame, crop[None], alpha[None], [(roi, local)], None if noise_seed is None else [noise_seed])


def paste_placed_batch(frame: torch.Tensor, crops: torch.Tensor, alphas: torch.Tensor,
                       placements: Sequence[Placement], noise_seeds: Sequence[int] | None = None) -> None:  # fmt: skip
    """:func:`paste_placed` for several crops, in order (a later face covers an earlier one where
    they overlap): one padded source and one ``grid_sample`` for all (unless their regions differ
    too much in size), then one blend per face. The same pixels as pasting them one by one.

    Args:
        frame: ``(H, W, 3)`` uint8 tensor, modified in place.
        crops: ``(B, S, S, 3)`` uint8 tensor.
        alphas: ``(B, S, S)`` float32 tensor in [0, 1] (e.g. :func:`feather`).
        placements: per crop, ``(roi, local)`` as :func:`~streamanon.composite.paste_region` or
            :func:`~streamanon.composite.place_support` give them, in ``frame``'s pixels.
        noise_seeds: per crop, the seed of the sensor noise matched to the frame
            (:func:`streamanon.noise_torch.noisy_like`); None pastes the crops as they are.
    """
    if len(placements) != len(crops) or len(crops) != len(alphas):
        raise ValueError(f"{len(crops)} crops, {len(alphas)} alphas and {len(placements)} placements differ in number")
    if noise_seeds is not None and len(noise_seeds) != len(placements):
        raise ValueError(f"{len(noise_seeds)} noise seeds for {len(placements)} crops")
    if not len(placements):
        return
    sizes = [(x2 - x1, y2 - y1) for (x1, y1, x2, y2), _ in placements]
    width, height = max(w for w, _ in sizes), max(h for _, h in sizes)
    if len(sizes) > 1 and len(sizes) * width * height > 2 * sum(w * h for w, h in sizes):
        # Faces of very different sizes: a batch padded to the largest would mostly sample nothing
        # (and could take gigabytes at 4K), so each is sampled on its own, still in order.
        for face in range(len(sizes)):
            one = slice(face, face + 1)
            seeds = None if noise_seeds is None else noise_seeds[one]
            paste_placed_batch(frame, crops[one], alphas[one], placements[one], seeds)
        return
    device = frame.device
    colour = F.pad(crops.to(device).permute(0, 3, 1, 2).float(), (1, 1, 1, 1), mode="replicate")
    source = torch.cat([colour, F.pad(alphas.to(device)[:, None].float(), (1, 1, 1, 1))], dim=1)  # (B, 4, S+2, S+2)
    grid = _sampling_grids([local for _, local in placements], width, height, source.shape[-1], device)
    sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)
    for face, ((x1, y1, x2, y2), _) in enumerate(placements):
        h, w = y2 - y1, x2 - x1
        colour = sampled[face, :3, :h, :w].permute(1, 2, 0)
        weight = sampled[face, 3, :h, :w].clamp(0.0, 1.0)[..., None]
        target = frame[y1:y2, x1:x2]
        base = target.float()
        if noise_seeds is not None:
            # Rounded first, as the host's uint8 warp is: the face's own levels are measured on it.
            colour = noise_torch.noisy_like(colour.round(), base, weight[..., 0], noise_seeds[face])
        target.copy_((base + weight * (colour - base)).round_().clamp_(0, 255).to(torch.uint8))


def feather(masks: torch.Tensor, width_px: float) -> torch.Tensor:
    """:func:`streamanon.composite.feather` (``outside_border=True``) for a batch of masks on
    their device: ``(B, H, W)`` float in [0, 1] -> ``(B, H, W)`` float32 alphas, the same values.

    The exact Euclidean distance to the nearest pixel outside the region is found in two passes,
    as in Felzenszwalb and Huttenlocher's transform: down each column (the nearest outside pixel
    above and below, from running maxima of their indices), then along each row (the minimum of
    ``dx^2 + column_distance^2`` over a window). Distances past ``width_px + 1`` give alpha 1
    whatever they are, so both passes stop there: the window is ``2 ceil(width_px) + 5`` wide.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B, H, W), got shape {tuple(masks.shape)}")
    masks = masks.float()
    region = masks > 0.5
    soft = masks.clamp(0.0, 1.0)
    if width_px <= 0:
        return region.float() * soft
    reach = math.ceil(width_px) + 2
    # A border of outside pixels: every column and row then has an outside pixel at each end.
    inside = F.pad(region, (1, 1, 1, 1), value=False)
    rows = torch.arange(inside.shape[1], device=masks.device).view(1, -1, 1).expand(inside.shape)
    above = torch.where(inside, -1, rows).cummax(dim=1).values  # the last outside row at or above
    below = torch.where(inside, inside.shape[1], rows).flip(1).cummin(dim=1).values.flip(1)  # at or below
    column = torch.minimum(rows - above, below - rows).clamp_(max=reach).float()
    squared = F.pad(column * column, (reach, reach), value=float(reach * reach))
    offsets = torch.arange(-reach, reach + 1, device=masks.device, dtype=torch.float32) ** 2
    nearest = (squared.unfold(2, 2 * reach + 1, 1) + offsets).amin(dim=-1)[:, 1:-1, 1:-1]
    # The square root in float64, rounded once to float32: torch's float32 sqrt on the CPU is not
    # always correctly rounded (sqrt(34) is one ulp off), OpenCV's is.
    distance = nearest.double().sqrt().float()
    # A tensor divisor: CUDA divides by a Python number as a product with its reciprocal, which
    # can differ from the reference's quotient in the last bit.
    t = ((distance - 1.0) / torch.full_like(distance, float(width_px))).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t) * region * soft


def _sampling_grids(locals_: Sequence[np.ndarray], width: int, height: int, padded_size: int,
                    device: torch.device) -> torch.Tensor:  # fmt: skip
    """grid_sample grids ``(B, height, width, 2)`` sampling the one-pixel-padded crops at
    ``local @ (x, y, 1)`` for each region pixel; ``align_corners=True`` puts pixel centres at
    integers, as OpenCV does."""
    # Crop pixel c -> padded pixel c + 1 -> normalised 2 (c + 1) / (P - 1) - 1, folded into the
    # affines' coefficients on the host: one small upload for all faces.
    scale = 2.0 / (padded_size - 1)
    coefficients = np.asarray(locals_, np.float64).reshape(-1, 6) * scale
    coefficients[:, [2, 5]] = coefficients[:, [2, 5]] + scale - 1.0
    a, b, c, d, e, f = upload(coefficients.astype(np.float32), device).T[..., None, None]
    xs = torch.arange(width, dtype=torch.float32, device=device)
    ys = torch.arange(height, dtype=torch.float32, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([a * gx + b * gy + c, d * gx + e * gy + f], dim=-1)
