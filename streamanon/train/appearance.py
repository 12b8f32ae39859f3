"""``streamanon train appearance``: fit the statistical appearance generator on prepared faces.

Steps (a few minutes on two CPU cores for the ~16k shared training faces):

1. Keep the training faces whose face region lies (almost) entirely inside the source photo
   (``coverage``; the shared sets are tight crops, and replicated edge pixels are no texture).
   Each face also counts mirrored, which doubles the data and makes the model left/right fair.
2. Mean landmark layout; every face is warped onto it with the generator's own thin-plate
   spline, so the texture statistics are those of the renderer.
3. Principal components of the shape-free textures inside the (dilated) mean face region
   (randomized SVD), each scaled to one standard deviation.
4. Ridge regression from landmark offsets to component weights (what expression and pose
   predict), and the Cholesky factor of what remains (identity: drawn from the latent).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ..faces.align import face_mask
from ..generate.appearance import AppearanceConfig, AppearanceGenerator
from ..generate.warp import control_points, warp_points
from .dataset import FaceShardDataset, flip_landmarks

log = logging.getLogger(__name__)

REGION_DILATE = 0.04  # grow the mean face region by this share of the crop: warps land inside it
SAMPLES_PER_FEATURE = 20  # faces per landmark feature of the shape regression, at least


@dataclass(frozen=True)
class AppearanceFitOptions:
    """Settings of one fit."""

    components: int = 96
    min_coverage: float = 0.95
    flip: bool = True
    ridge: float = 1e-3  # relative to the mean landmark-offset variance
    max_faces: int | None = None  # seeded subset (quick runs)
    seed: int = 0
    chunk: int = 256  # faces warped at once


@dataclass
class AppearanceFitSummary:
    """What a fit saw and produced (goes into the model card)."""

    faces: int  # training faces used (before mirroring)
    faces_available: int
    samples: int  # faces used including mirrored copies
    components: int
    explained_variance: float  # share of texture variance inside the region the components keep
    shape_explained: float  # share of component variance the landmark regression predicts
    region_pixels: int
    seconds: float


def _select(dataset: FaceShardDataset, options: AppearanceFitOptions) -> np.ndarray:
    coverage = np.concatenate(
        [s.coverage if s.coverage is not None else np.ones(len(s), np.float16) for s in dataset.shards]
    ).astype(np.float32)
    chosen = np.flatnonzero(coverage >= options.min_coverage)
    if options.max_faces is not None and len(chosen) > options.max_faces:
        rng = np.random.default_rng(options.seed)
        chosen = np.sort(rng.choice(chosen, options.max_faces, replace=False))
    return chosen


def _region_mask(mean_landmarks: np.ndarray, size: int) -> np.ndarray:
    import cv2

    region = face_mask(mean_landmarks, size).astype(np.uint8)
    radius = max(1, round(REGION_DILATE * size))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(region, kernel) > 0


def fit_appearance(
    data_dir: str, options: AppearanceFitOptions | None = None, progress: bool = False
) -> tuple[AppearanceGenerator, AppearanceFitSummary]:
    """Fit an :class:`AppearanceGenerator` on the ``train`` split of a prepared data directory."""
    from tqdm import tqdm

    options = options or AppearanceFitOptions()
    started = time.perf_counter()
    dataset = FaceShardDataset(data_dir, "train")
    size = dataset.resolution
    chosen = _select(dataset, options)
    samples = len(chosen) * (2 if options.flip else 1)
    if samples < 2 * options.components:
        raise UserError(
            f"{len(chosen)} usable faces (coverage >= {options.min_coverage}) are too few for "
            f"{options.components} components; lower --components or --min-coverage"
        )

    images = np.empty((len(chosen), size, size, 3), np.uint8)
    points = np.empty((len(chosen), 68, 2), np.float32)
    for row, index in enumerate(tqdm(chosen, desc="decoding", disable=not progress, unit="face")):
        images[row], points[row] = dataset.raw(int(index))
    if options.flip:
        images = np.concatenate([images, images[:, :, ::-1]])
        points = np.concatenate([points, np.stack([flip_landmarks(p, size) for p in points])])
    landmarks = torch.from_numpy(points)
    mean_landmarks = landmarks.double().mean(dim=0).float()

    region = torch.from_numpy(_region_mask(mean_landmarks.numpy(), size))  # (S, S) bool
    region_idx = torch.nonzero(region.flatten()).squeeze(1)
    dims = 3 * len(region_idx)
    textures = torch.empty(samples, dims, dtype=torch.float32)
    full_sum = torch.zeros(3, size * size, dtype=torch.float64)
    target = control_points(mean_landmarks[None], size)
    for start in tqdm(range(0, samples, options.chunk), desc="warping", disable=not progress, unit="chunk"):
        part = slice(start, start + options.chunk)
        batch = torch.from_numpy(np.ascontiguousarray(images[part])).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        source = control_points(landmarks[part], size)
        warped = warp_points(batch, source, target.expand(len(batch), -1, -1)).flatten(2)  # (b, 3, S*S)
        full_sum += warped.double().sum(dim=0)
        textures[part] = warped[:, :, region_idx].flatten(1)
    del images

    mean_region = textures.mean(dim=0)
    textures -= mean_region
    total_variance = float(textures.square().sum()) / (samples - 1)
    k = options.components
    torch.manual_seed(options.seed)
    log.info("PCA of %d textures x %d values, %d components", samples, dims, k)
    _, singular, vectors = torch.svd_lowrank(textures, q=k + 16, niter=4)
    vectors, singular = vectors[:, :k], singular[:k]
    stds = singular / np.sqrt(samples - 1)
    coeffs = (textures @ vectors) / stds  # (N, K) in standard deviations
    explained = float(stds.square().sum()) / total_variance
    del textures

    # Landmark offsets -> coefficients (ridge), on the principal directions of the offsets: at
    # least SAMPLES_PER_FEATURE faces per feature, or a small set would be fitted exactly and
    # leave no residual (no identity) to sample. With enough faces that is all 136 directions,
    # a rotation that leaves the ridge solution unchanged.
    offsets = (landmarks - mean_landmarks).flatten(1).double() / size  # (N, 136)
    features = min(offsets.shape[1], max(1, samples // SAMPLES_PER_FEATURE))
    directions = torch.linalg.svd(offsets, full_matrices=False).Vh[:features].t()  # (136, m)
    projected = offsets @ directions
    gram = projected.t() @ projected
    ridge = options.ridge * float(gram.diagonal().mean())
    weights_m = torch.linalg.solve(gram + ridge * torch.eye(features, dtype=torch.float64), projected.t() @ coeffs.double())
    weights = directions @ weights_m  # (136, K)
    residual = coeffs.double() - offsets @ weights
    covariance = residual.t() @ residual / (samples - 1)
    factor = torch.linalg.cholesky(covariance + 1e-6 * torch.eye(k, dtype=torch.float64))
    shape_explained = 1.0 - float(residual.square().sum() / coeffs.double().square().sum())

    model = AppearanceGenerator(AppearanceConfig(resolution=size, latent_dim=k))
    mean_texture = (full_sum / samples).float()  # outside the region: the plain mean (never sampled far)
    mean_texture[:, region_idx] = mean_region.view(3, -1)
    basis = torch.zeros(k, 3, size * size)
    basis[:, :, region_idx] = (vectors * stds).t().reshape(k, 3, -1)
    with torch.no_grad():
        model.mean_landmarks.copy_(mean_landmarks)
        model.mean_texture.copy_(mean_texture.view(3, size, size))
        model.basis.copy_(basis.view(k, 3, size, size))
        model.shape_weights.copy_(weights.float())
        model.identity_factor.copy_(factor.float())
    summary = AppearanceFitSummary(
        faces=len(chosen),
        faces_available=len(dataset),
        samples=samples,
        components=k,
        explained_variance=round(explained, 4),
        shape_explained=round(shape_explained, 4),
        region_pixels=len(region_idx),
        seconds=round(time.perf_counter() - started, 1),
    )
    return model.eval(), summary
