"""Torch twin of :mod:`streamanon.noise`: the same noise matching for faces pasted on the device.

The same estimator (Immerkaer's kernel, a histogram of ``noise.BIN``-wide bins and the interpolated
median) and the same tile (:func:`streamanon.noise.noise_tile`, uploaded once per device with the
constants, read at the offsets the host draws from the same seeds): host and device add the same
noise up to float rounding (tests/test_noise.py). Nothing here reads a value back from the device,
so a face's noise is queued behind its paste without the host waiting.
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
    """The host module's constants and tile on one device, uploaded once: an upload per call would
    be a copy that waits for the device's queued work."""

    tile: torch.Tensor
    kernel: torch.Tensor  # (4, 1, 3, 3)


_ON_DEVICE: dict[str, _OnDevice] = {}


def _on(device: torch.device) -> _OnDevice:
    key = str(device)
    if key not in _ON_DEVICE:
        constants = [noise.noise_tile(), np.repeat(noise.KERNEL[None, None], 4, axis=0)]
        _ON_DEVICE[key] = _OnDevice(*(upload(np.array(c, np.float32), device) for c in constants))
    return _ON_DEVICE[key]


def channel_sigmas(image: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """:func:`streamanon.noise.channel_sigmas` for ``image`` ``(C, H, W)`` (C <= 4) and ``inside``
    ``(H, W)`` bool."""
    channels = image.shape[0]
    # Erosion by a 3x3 square with everything beyond the region's array counted as outside.
    outside = F.pad((~inside).float()[None, None], (1, 1, 1, 1), value=1.0)
    core = F.max_pool2d(outside, 3, stride=1)[0, 0] == 0
    count = core.sum()
    # The host's thinning to every k-th row past noise.MAX_SAMPLES pixels, without a sync.
    step = torch.div(count + noise.MAX_SAMPLES - 1, noise.MAX_SAMPLES, rounding_mode="floor").clamp(min=1)
    core = core & (torch.arange(core.shape[0], device=core.device) % step == 0)[:, None]
    kernel = _on(image.device).kernel[:channels]
    response = F.conv2d(F.pad(image[None], (1, 1, 1, 1), mode="reflect"), kernel, groups=channels)[0]
    bins = (response.abs() / noise.BIN + 0.5).floor_().clamp_(max=noise.BINS - 1).long()
    bins += torch.arange(channels, device=image.device).view(-1, 1, 1) * noise.BINS
    # Float counts are exact integers far past any region's size, whatever the order of the atomics;
    # scatter_add rather than bincount, which reads its input's maximum back to the host on CUDA.
    weights = core.expand(channels, -1, -1).float()
    counts = torch.zeros(channels * noise.BINS, device=image.device)
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
    return ((k - 0.5 + (half - before) / counts.gather(1, k)) * noise.BIN)[:, 0]


def noise_levels(rgb: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """:func:`streamanon.noise.noise_levels` for an ``(H, W, 3)`` float tensor: ``(4,)``."""
    channels = rgb.float().permute(2, 0, 1)
    levels = channel_sigmas(torch.cat([channels, channels.sum(dim=0, keepdim=True)]), inside)
    return torch.cat([levels[:3], levels[3:] / 3.0])


def covariance_parts(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`streamanon.noise.covariance_parts`: the grey variance and the colour variances."""
    variances = torch.nan_to_num(levels.double(), nan=0.0).square()
    grey = ((9.0 * variances[3] - variances[:3].sum()) / 6.0).clamp(min=0.0)
    grey = torch.minimum(grey, variances[:3].min())
    return grey, variances[:3] - grey


def missing_sigmas(frame_levels: torch.Tensor, face_levels: torch.Tensor) -> torch.Tensor:
    """:func:`streamanon.noise.missing_sigmas`: ``(4,)`` grey, R, G, B."""
    frame_grey, frame_colour = covariance_parts(frame_levels)
    face_grey, face_colour = covariance_parts(face_levels)
    missing = torch.cat([(frame_grey - face_grey)[None], frame_colour - face_colour]).clamp(min=0.0)
    return missing.sqrt().clamp(max=noise.MAX_SIGMA).float()


def noise_from(sigmas: torch.Tensor, height: int, width: int, seed: int) -> torch.Tensor:
    """:func:`streamanon.noise.noise_from` on ``sigmas``' device: the same tile window, the same values."""
    window = noise.tile_window(height, width, seed, _on(sigmas.device).tile)
    # Grey part into every channel, plus each channel's own.
    return window[..., :1] * sigmas[0] + window[..., 1:] * sigmas[1:]


def noisy_like(replacement: torch.Tensor, original: torch.Tensor, alpha: torch.Tensor, seed: int) -> torch.Tensor:
    """:func:`streamanon.noise.noisy_like` for float ``(H, W, 3)`` tensors holding grey levels
    (``replacement`` already rounded, as the host's uint8 warp is): the noisy face, rounded and
    clipped, as float32. The clean-frame test is a mask, not a branch: nothing waits on the device."""
    inside = alpha >= noise.OPAQUE
    frame_levels = noise_levels(original, inside)
    sigmas = missing_sigmas(frame_levels, noise_levels(replacement, inside))
    noisy = torch.nan_to_num(frame_levels[:3], nan=0.0).amax() >= noise.CLEAN
    sigmas = torch.where(noisy, sigmas, torch.zeros_like(sigmas))
    added = noise_from(sigmas, replacement.shape[0], replacement.shape[1], seed)
    return (replacement.float() + added).round_().clamp_(0, 255)
