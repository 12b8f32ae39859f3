"""Fine detail of the appearance generator, fitted to real faces' spectra (``streamanon train detail``).

150 principal components keep a face's low frequencies only: rendered at held-out faces'
landmarks, the plain generator has about half of the real crops' luminance power at
0.12-0.2 cycles/px, a quarter at 0.2-0.3 and a tenth above, which is why its faces look smooth.
Two additions in the model's mean layout, before rendering (:class:`AppearanceGenerator`):

1. **sharpening**: an unsharp mask (Gaussian, ``sharpen_sigma`` px) with the amount at which the
   rendered faces' power at 0.12-0.2 cycles/px matches real faces' (median over faces);
2. **grain**: a Gaussian random field with the spectrum (above ``GRAIN_CUTOFF``) and the per-pixel
   amplitude of the luminance that the components leave out of the training faces, with the
   strength at which the power above 0.3 cycles/px comes closest to real faces'. A bank of fields
   is drawn once (seeded) and mixed with unit-norm weights taken from the track's latent: every
   identity gets its own grain with the same statistics, fixed in the face's own layout, so it
   moves with the face and does not flicker. It is noise, not anybody's skin: no training face's
   pixels are stored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import UserError
from ..generate.appearance import AppearanceGenerator
from ..generate.warp import control_points, warp_points
from .appearance import _region_mask
from .dataset import FaceShardDataset, face_mask

log = logging.getLogger(__name__)

GRAIN_CUTOFF = 0.25  # cycles/px: the grain holds only frequencies the components barely reach
AMPLITUDE_CAP_PERCENTILE = 90  # residual at eyes and mouth is misalignment, not texture: capped
SHARPEN_BAND = (0.12, 0.2)  # cycles/px of the crop: where the sharpening is matched
GRAIN_BAND = (0.3, 0.5)  # where the grain is matched
SHARPEN_AMOUNTS = tuple(round(0.2 * i, 1) for i in range(11))  # 0 .. 2
GRAIN_STRENGTHS = tuple(round(0.25 * i, 2) for i in range(9))  # 0 .. 2
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class DetailFitOptions:
    """Settings of one detail fit."""

    residual_faces: int = 3000  # training faces whose left-out luminance gives the grain's statistics
    calibration_faces: int = 150  # other training faces the two strengths are matched on
    fields: int = 16  # grain fields in the bank
    sharpen_sigma: float = 1.0
    min_coverage: float = 0.75
    seed: int = 0
    chunk: int = 128


@dataclass
class DetailFitSummary:
    """What a detail fit chose and why (goes into the fit JSON and the model card)."""

    sharpen: float
    grain: float
    grain_amplitude_median: float  # 8-bit levels of the grain at strength 1, over the face region
    band_power_before: dict[str, float]  # generator / real faces, median over calibration faces
    band_power_after: dict[str, float]
    residual_faces: int
    calibration_faces: int
    seconds: float


def _frequency_radius(size: int) -> np.ndarray:
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None]
    return np.sqrt(fx**2 + fy**2)


def _faces(dataset: FaceShardDataset, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images, points = zip(*(dataset.raw(int(i)) for i in indices))
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return batch, torch.from_numpy(np.stack(points)).float()


def left_out_luminance(model: AppearanceGenerator, dataset: FaceShardDataset, indices: np.ndarray,
                       chunk: int = 128) -> np.ndarray:  # fmt: skip
    """Luminance (N, S, S) in [0, 1] units of what the model's components miss of these faces, in its mean layout."""
    size = model.config.resolution
    mean = model.mean_texture.float().flatten()
    basis = model.basis.float().flatten(1)  # components scaled to one standard deviation
    variances = basis.square().sum(dim=1)
    target = control_points(model.mean_landmarks.float()[None], size)
    luma = torch.from_numpy(LUMA)
    out = np.empty((len(indices), size, size), np.float32)
    for start in range(0, len(indices), chunk):
        batch, landmarks = _faces(dataset, indices[start : start + chunk])
        warped = warp_points(batch, control_points(landmarks, size), target.expand(len(batch), -1, -1)).flatten(1)
        centred = warped - mean
        left = centred - (centred @ basis.t() / variances) @ basis
        rgb = left.view(-1, 3, size, size) / 2  # [-1, 1] -> [0, 1] units
        out[start : start + len(batch)] = torch.einsum("nchw,c->nhw", rgb, luma).numpy()
    return out


def grain_bank(residual: np.ndarray, region: np.ndarray, fields: int, seed: int) -> np.ndarray:
    """``fields`` Gaussian random fields (F, S, S) with the residual's high-frequency spectrum and amplitude.

    Unit strength means the residual's own amplitude (in [0, 1] luminance units) at every pixel.
    """
    import cv2

    size = residual.shape[-1]
    high_pass = 1.0 - np.exp(-((_frequency_radius(size) / GRAIN_CUTOFF) ** 4))
    inside = cv2.erode(region.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # no edge of the region in the spectrum
    power = (np.abs(np.fft.fft2(residual * inside)) ** 2).mean(axis=0)
    response = np.sqrt(power) * high_pass
    filtered = np.real(np.fft.ifft2(np.fft.fft2(residual) * high_pass))
    amplitude = cv2.GaussianBlur(np.sqrt((filtered**2).mean(axis=0)).astype(np.float32), (0, 0), 2.0)
    amplitude = np.minimum(amplitude, np.percentile(amplitude[region], AMPLITUDE_CAP_PERCENTILE))
    rng = np.random.default_rng(seed)
    bank = np.empty((fields, size, size), np.float32)
    for i in range(fields):
        field = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * response))
        bank[i] = amplitude * field / field.std()
    return bank


def band_power(images: np.ndarray, landmarks: np.ndarray, bands: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Luminance power (N, bands) of (N, S, S, 3) [0, 1] crops inside their face regions."""
    import cv2

    size = images.shape[1]
    radius = _frequency_radius(size)
    out = np.empty((len(images), len(bands)))
    for i, (image, points) in enumerate(zip(images, landmarks)):
        weight = cv2.erode((face_mask(points, size) > 0.5).astype(np.uint8), np.ones((7, 7), np.uint8))
        weight = cv2.GaussianBlur(weight.astype(np.float32), (0, 0), 2.0)
        gray = image @ LUMA
        centred = (gray - (gray * weight).sum() / weight.sum()) * weight
        power = np.abs(np.fft.fft2(centred)) ** 2 / weight.sum()
        out[i] = [power[(radius >= lo) & (radius < hi)].mean() for lo, hi in bands]
    return out


def with_detail(model: AppearanceGenerator, bank: np.ndarray | None, sharpen: float, grain: float,
                sharpen_sigma: float, seed: int = 0) -> AppearanceGenerator:  # fmt: skip
    """A copy of ``model`` with this sharpening and grain (``bank`` None: no grain)."""
    fields = 0 if bank is None else len(bank)
    config = replace(model.config, sharpen=sharpen, sharpen_sigma=sharpen_sigma, grain=grain, grain_fields=fields)
    out = AppearanceGenerator(config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("grain_")}
    if fields:
        generator = torch.Generator().manual_seed(seed)
        state["grain_bank"] = torch.from_numpy(bank).to(torch.float16)
        state["grain_mix"] = torch.randn(fields, config.latent_dim, generator=generator)
    out.load_state_dict(state)
    return out.eval().requires_grad_(False)


def _rendered(model: AppearanceGenerator, landmarks: torch.Tensor, seed: int) -> np.ndarray:
    z = torch.randn(len(landmarks), model.config.latent_dim, generator=torch.Generator().manual_seed(seed))
    size = model.config.resolution
    blank = torch.zeros(len(landmarks), 3, size, size)  # the raw output never reads the crop
    with torch.no_grad():
        raw = model(blank, blank[:, :1], landmarks, z, compose=False)
    return ((raw.permute(0, 2, 3, 1).numpy() + 1.0) / 2.0).clip(0.0, 1.0)


def fit_detail(model: AppearanceGenerator, data_dir: str,
               options: DetailFitOptions | None = None) -> tuple[AppearanceGenerator, DetailFitSummary]:  # fmt: skip
    """Fit the sharpening and grain of an appearance model on the ``train`` split of a prepared data directory."""
    options = options or DetailFitOptions()
    started = time.perf_counter()
    dataset = FaceShardDataset(data_dir, "train")
    coverage = np.concatenate(
        [s.coverage if s.coverage is not None else np.ones(len(s), np.float16) for s in dataset.shards]
    ).astype(np.float32)
    usable = np.flatnonzero(coverage >= options.min_coverage)
    if len(usable) < 4:
        raise UserError(f"{len(usable)} faces with coverage >= {options.min_coverage} are too few to fit the detail")
    picked = np.random.default_rng(options.seed).permutation(usable)
    # Disjoint sets; a small data set gives a quarter of its faces to the calibration.
    calibration = min(options.calibration_faces, len(picked) // 4)
    residual = min(options.residual_faces, len(picked) - calibration)
    residual_idx = np.sort(picked[:residual])
    calibration_idx = np.sort(picked[residual : residual + calibration])

    plain = with_detail(model, None, 0.0, 0.0, options.sharpen_sigma)
    size = model.config.resolution
    residual = left_out_luminance(plain, dataset, residual_idx, options.chunk)
    region = _region_mask(plain.mean_landmarks.numpy(), size)
    bank = grain_bank(residual, region, options.fields, options.seed)
    del residual

    images, landmarks = _faces(dataset, calibration_idx)
    real_images = ((images.permute(0, 2, 3, 1).numpy() + 1.0) / 2.0).astype(np.float32)
    points = landmarks.numpy()
    bands = (SHARPEN_BAND, GRAIN_BAND)
    real = np.median(band_power(real_images, points, bands), axis=0)

    def ratios(candidate: AppearanceGenerator) -> np.ndarray:
        rendered = _rendered(candidate, landmarks, options.seed + 1)
        return np.median(band_power(rendered, points, bands), axis=0) / real

    def detailed(sharpen: float, grain: float) -> AppearanceGenerator:
        return with_detail(plain, bank, sharpen, grain, options.sharpen_sigma, options.seed)

    # One strength at a time, each matched on a log scale in its own band (the sharpening barely
    # reaches the grain's band, the grain not the sharpening's).
    before = ratios(plain)
    sharpen = min(SHARPEN_AMOUNTS, key=lambda a: abs(np.log(ratios(detailed(a, 0.0))[0])))
    grain = min(GRAIN_STRENGTHS, key=lambda g: abs(np.log(ratios(detailed(sharpen, g))[1])))
    fitted = detailed(sharpen, grain)
    after = ratios(fitted)
    names = [f"{lo}-{hi}" for lo, hi in bands]
    summary = DetailFitSummary(
        sharpen=sharpen,
        grain=grain,
        grain_amplitude_median=round(float(np.median(np.abs(bank[:, region]))) * 255 * 1.4826, 2),
        band_power_before={n: round(float(v), 3) for n, v in zip(names, before)},
        band_power_after={n: round(float(v), 3) for n, v in zip(names, after)},
        residual_faces=len(residual_idx),
        calibration_faces=len(calibration_idx),
        seconds=round(time.perf_counter() - started, 1),
    )
    log.info("detail: sharpen %.1f, grain %.2f; band power / real %s -> %s", sharpen, grain, before, after)
    return fitted, summary
