"""Torch twin of :func:`streamanon.composite.paste_aligned`: paste an aligned crop back into a
frame that lives on the accelerator (CUDA on a GPU machine; CPU tensors in the tests).

Same arguments and the same pixels touched as the OpenCV version (both use
:func:`streamanon.composite.paste_region`), so the pipeline can keep a frame on the GPU from
upload to download: the generated crops never cross to the host. Differences to the reference
are rounding only: OpenCV's ``warpAffine`` samples at 1/32-pixel steps with fixed-point weights
and rounds the warped crop before blending; here sampling and blending stay in float32 and the
result is rounded once (tests/test_composite_torch.py bounds the difference).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .composite import paste_region


def paste_aligned(frame: torch.Tensor, crop: torch.Tensor, matrix_frame_to_crop: np.ndarray, crop_alpha: np.ndarray) -> None:
    """Warp an aligned crop back into ``frame`` and blend it there, in place.

    Args:
        frame: ``(H, W, 3)`` uint8 tensor, modified in place.
        crop: ``(S, S, 3)`` uint8 tensor (any device; moved to ``frame``'s).
        matrix_frame_to_crop: ``(2, 3)`` affine mapping frame pixels to crop pixels, invertible.
        crop_alpha: ``(S, S)`` float32 host array in [0, 1] (e.g. ``composite.feather``); its
            support decides the region written, on the host, so nothing waits on the device.
    """
    if frame.ndim != 3 or frame.dtype != torch.uint8:
        raise ValueError(f"frame must be an (H, W, C) uint8 tensor, got {frame.dtype} {tuple(frame.shape)}")
    if crop.ndim != 3 or crop.shape[2] != frame.shape[2]:
        raise ValueError(f"crop must be (S, S, {frame.shape[2]}), got {tuple(crop.shape)}")
    placement = paste_region(tuple(frame.shape), matrix_frame_to_crop, tuple(crop.shape), crop_alpha)
    if placement is not None:
        paste_placed(frame, crop, *placement, crop_alpha)


def paste_placed(frame: torch.Tensor, crop: torch.Tensor, roi: tuple[int, int, int, int], local: np.ndarray,
                 crop_alpha: np.ndarray) -> None:  # fmt: skip
    """:func:`paste_aligned` where :func:`~streamanon.composite.paste_region` has already given
    the region ``roi`` of ``frame`` and the affine ``local`` from its pixels to the crop's."""
    x1, y1, x2, y2 = roi
    device = frame.device
    alpha = torch.from_numpy(np.ascontiguousarray(crop_alpha, dtype=np.float32)).to(device, non_blocking=True)
    # Colour and alpha as one 4-channel image, padded by one pixel: replicated colour (OpenCV's
    # BORDER_REPLICATE) and zero alpha (BORDER_CONSTANT 0). Sampling clamps to that padding, so a
    # single grid_sample gives both borders exactly.
    colour = F.pad(crop.to(device).permute(2, 0, 1)[None].float(), (1, 1, 1, 1), mode="replicate")
    source = torch.cat([colour, F.pad(alpha[None, None], (1, 1, 1, 1))], dim=1)  # (1, 4, S + 2, S + 2)
    grid = _sampling_grid(local, x2 - x1, y2 - y1, source.shape[-1], device)
    sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    colour, weight = sampled[:3].permute(1, 2, 0), sampled[3].clamp(0.0, 1.0)[..., None]
    target = frame[y1:y2, x1:x2]
    base = target.float()
    target.copy_((base + weight * (colour - base)).round_().clamp_(0, 255).to(torch.uint8))


def _sampling_grid(local: np.ndarray, width: int, height: int, padded_size: int, device: torch.device) -> torch.Tensor:
    """grid_sample grid ``(1, h, w, 2)`` sampling the one-pixel-padded crop at ``local @ (x, y, 1)``
    for each region pixel; ``align_corners=True`` puts pixel centres at integers, as OpenCV does."""
    # Crop pixel c -> padded pixel c + 1 -> normalised 2 (c + 1) / (P - 1) - 1, folded into the
    # affine's coefficients on the host (plain floats: nothing extra goes to the device).
    scale = 2.0 / (padded_size - 1)
    (a, b, c), (d, e, f) = (np.asarray(local, np.float64) * scale).tolist()
    c, f = c + scale - 1.0, f + scale - 1.0
    xs = torch.arange(width, dtype=torch.float32, device=device)
    ys = torch.arange(height, dtype=torch.float32, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([a * gx + b * gy + c, d * gx + e * gy + f], dim=-1)[None]
