"""Torch twin of :mod:`streamanon.noise`: the same noise matching for faces pasted on the device.

The same estimator (Immerkaer's kernel, a histogram of ``noise.BIN``-wide bins and the interpolated
median), the same non-negative solve (vectorised over channels) and the same tiles
(:func:`streamanon.noise.noise_bank`, uploaded once per device with the constants, read at the
offsets the host draws from the same seeds): host and device add the same noise up to float
rounding (tests/test_noise.py). Nothing here reads a value back from the device, so a face's
noise is queued behind its paste without the host waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import noise
from .gpu import upload


@dataclass(frozen=True)
class _OnDevice:
    """The host module's constants and the bank's tiles on one device, uploaded once: an upload per
    call would be a copy that waits for the device's queued work."""

    white: torch.Tensor
    smooth: torch.Tensor
    kernel: torch.Tensor  # (3, 1, 3, 3)
    rgb_to_ycc: torch.Tensor
    ycc_to_rgb: torch.Tensor
    design: torch.Tensor  # the bank's squared responses, scale x component
    design_inverse: torch.Tensor


_ON_DEVICE: dict[str, _OnDevice] = {}


def _on(device: torch.device) -> _OnDevice:
    key = str(device)
    if key not in _ON_DEVICE:
        bank = noise.noise_bank()
        design = np.square(bank.response.astype(np.float64))
        constants = [bank.white, bank.smooth, np.repeat(noise.KERNEL[None, None], 3, axis=0), noise.RGB_TO_YCC,
                     noise.YCC_TO_RGB, design, np.linalg.inv(design)]  # fmt: skip
        _ON_DEVICE[key] = _OnDevice(*(upload(np.asarray(c, np.float32), device) for c in constants))
    return _ON_DEVICE[key]


def channel_sigmas(ycc: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """:func:`streamanon.noise.channel_sigmas` for ``ycc`` ``(C, H, W)`` and ``inside`` ``(H, W)`` bool."""
    channels = ycc.shape[0]
    # Erosion by a 3x3 square with everything beyond the region's array counted as outside.
    outside = F.pad((~inside).float()[None, None], (1, 1, 1, 1), value=1.0)
    core = F.max_pool2d(outside, 3, stride=1)[0, 0] == 0
    count = core.sum()
    # The host's thinning to every k-th row past noise.MAX_SAMPLES pixels, without a sync.
    step = torch.div(count + noise.MAX_SAMPLES - 1, noise.MAX_SAMPLES, rounding_mode="floor").clamp(min=1)
    core = core & (torch.arange(core.shape[0], device=core.device) % step == 0)[:, None]
    kernel = _on(ycc.device).kernel[:channels]
    response = F.conv2d(F.pad(ycc[None], (1, 1, 1, 1), mode="reflect"), kernel, groups=channels)[0]
    magnitudes = response.abs().clamp_(max=(noise.BINS - 0.5) * noise.BIN)
    bins = (magnitudes / noise.BIN).floor_().long().clamp_(max=noise.BINS - 1)
    bins += torch.arange(channels, device=ycc.device).view(-1, 1, 1) * noise.BINS
    # Float counts are exact integers far past any region's size, whatever the order of the atomics;
    # scatter_add rather than bincount, which reads its input's maximum back to the host on CUDA.
    weights = core.expand(channels, -1, -1).float()
    counts = torch.zeros(channels * noise.BINS, device=ycc.device)
    counts.scatter_add_(0, bins.reshape(-1), weights.reshape(-1))
    median = _median_of_counts(counts.view(channels, noise.BINS))
    enough = count >= noise.MIN_PIXELS
    return torch.where(enough, median * noise.MEDIAN_TO_SIGMA, torch.full_like(median, float("nan")))


def _median_of_counts(counts: torch.Tensor) -> torch.Tensor:
    """Interpolated median of each row's histogram (:func:`streamanon.noise._median_of_counts`)."""
    cumulative = counts.cumsum(dim=1)
    half = cumulative[:, -1:] / 2.0
    k = torch.searchsorted(cumulative.contiguous(), half).clamp_(max=counts.shape[1] - 1)
    before = torch.where(k > 0, cumulative.gather(1, (k - 1).clamp(min=0)), torch.zeros_like(half))
    return ((k + (half - before) / counts.gather(1, k)) * noise.BIN)[:, 0]


def noise_levels(rgb: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """:func:`streamanon.noise.noise_levels` for an ``(H, W, 3)`` float tensor: ``(2, 3)``."""
    ycc = (rgb.float() @ _on(rgb.device).rgb_to_ycc.T).permute(2, 0, 1)
    height, width = (inside.shape[0] // 2) * 2, (inside.shape[1] // 2) * 2
    half = F.avg_pool2d(ycc[None, :, :height, :width], 2)[0]
    half_inside = F.avg_pool2d(inside[None, None, :height, :width].float(), 2)[0, 0] == 1.0
    return torch.stack([channel_sigmas(ycc, inside), channel_sigmas(half, half_inside)])


def component_sigmas(frame_levels: torch.Tensor, face_levels: torch.Tensor) -> torch.Tensor:
    """:func:`streamanon.noise.component_sigmas` with the bank's responses, the 2x2 non-negative
    solve vectorised over channels."""
    missing = torch.nan_to_num((frame_levels.square() - face_levels.square()).clamp(min=0.0), nan=0.0)
    constants = _on(frame_levels.device)
    design = constants.design
    exact = constants.design_inverse @ missing  # (2, C)
    columns = []
    for column in range(2):
        a = design[:, column : column + 1]
        amount = ((a * missing).sum(0) / a.square().sum()).clamp(min=0.0)  # (C,)
        residual = (a * amount - missing).square().sum(0)
        columns.append((amount, residual))
    (first, first_residual), (second, second_residual) = columns
    zero = torch.zeros_like(first)
    single = torch.where(
        first_residual <= second_residual, torch.stack([first, zero]), torch.stack([zero, second])
    )
    variances = torch.where((exact >= 0).all(dim=0), exact, single)
    return variances.sqrt().clamp(max=noise.MAX_SIGMA)


def noise_from(sigmas: torch.Tensor, height: int, width: int, seed: int) -> torch.Tensor:
    """:func:`streamanon.noise.noise_from` on ``sigmas``' device: the same tile window, the same values."""
    constants = _on(sigmas.device)
    white, smooth = constants.white, constants.smooth
    top, left = noise.window_offset(height, width, seed)
    if top + height <= noise.TILE and left + width <= noise.TILE:
        white, smooth = white[top : top + height, left : left + width], smooth[top : top + height, left : left + width]
    else:
        rows = (top + torch.arange(height, device=sigmas.device)) % noise.TILE
        cols = (left + torch.arange(width, device=sigmas.device)) % noise.TILE
        white, smooth = white[rows[:, None], cols], smooth[rows[:, None], cols]
    to_rgb = constants.ycc_to_rgb.T
    return white @ (sigmas[0][:, None] * to_rgb) + smooth @ (sigmas[1][:, None] * to_rgb)


def noisy_like(replacement: torch.Tensor, original: torch.Tensor, alpha: torch.Tensor, seed: int) -> torch.Tensor:
    """:func:`streamanon.noise.noisy_like` for float ``(H, W, 3)`` tensors holding grey levels
    (``replacement`` already rounded, as the host's uint8 warp is): the noisy face, rounded and
    clipped, as float32. The clean-frame test is a mask, not a branch: nothing waits on the device."""
    inside = alpha >= noise.OPAQUE
    frame_levels = noise_levels(original, inside)
    sigmas = component_sigmas(frame_levels, noise_levels(replacement, inside))
    noisy = torch.nan_to_num(frame_levels, nan=0.0).amax() >= noise.CLEAN
    sigmas = torch.where(noisy, sigmas, torch.zeros_like(sigmas))
    added = noise_from(sigmas, replacement.shape[0], replacement.shape[1], seed)
    return (replacement.float() + added).round_().clamp_(0, 255)
