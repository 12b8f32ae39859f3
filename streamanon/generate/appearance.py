"""Statistical appearance generator: a Gaussian model of shape-free face textures, rendered onto
the requested landmarks with a thin-plate spline (after Cootes, Edwards & Taylor's active
appearance models).

What it draws is a new face, not a stored one: the texture is the mean face plus a weighted sum
of principal components, and the weights are

    c = W s + L z

where ``s`` are the target landmarks relative to the mean layout (so expression and pose shape
the texture: an open mouth gets a dark mouth, a turned head its shading), ``W`` a ridge
regression fitted on the training faces, and ``L z`` the identity part: ``z`` is the track's
latent code and ``L`` the Cholesky factor of the residual covariance, so every latent gives a
plausible face and different latents give different people. Before rendering, a fitted
sharpening and a skin grain drawn from the latent restore the fine detail the components miss
(:mod:`streamanon.train.detail`; absent from models fitted before it). The generator never reads
the crop's pixels inside the mask; the crop only supplies the context of the composed output.

It is trained in minutes on a CPU (``streamanon train appearance``) and has the same call
signature, checkpoint format and runtime as the conditional U-Net of :mod:`.model`, which needs
GPU training to reach its quality; it is the shipped default until such weights exist.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .model import compose_output
from .warp import control_points, warp_points

ARCHITECTURE = "appearance"
# Rendering evaluates the spline every 2 px and interpolates: 4x fewer evaluations (most of the
# generator's time). On 60 validation faces the rendered face region moves 0.17 grey levels on
# average (p99.9: 6); the largest moves sit on a fold of the spline at crowded eye corners.
RENDER_LATTICE_STEP = 2


@dataclass(frozen=True)
class AppearanceConfig:
    """Size of an appearance model; stored in its checkpoint."""

    resolution: int = 128
    latent_dim: int = 96  # texture components; the latent drives all of them
    temperature: float = 1.0  # scale of the identity part L z (1 = the training faces' spread)
    latent_clip: float = 3.0  # |z| beyond this is clipped: rare extremes make implausible faces
    # Fine detail (``streamanon train detail``; 0 = none, as in models fitted before it existed):
    sharpen: float = 0.0  # unsharp-mask amount on the texture
    sharpen_sigma: float = 1.0  # its Gaussian, px of the mean layout
    grain: float = 0.0  # strength of the grain (1 = the training faces' left-out high frequencies)
    grain_fields: int = 0  # random fields in the grain bank (buffers ``grain_bank``, ``grain_mix``)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AppearanceConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class AppearanceGenerator(nn.Module):
    """(crop, mask, landmarks, z) -> full crop in [-1, 1]; same contract as ``Generator``.

    Buffers (all persistent, so ``state_dict`` is the whole model):
    ``mean_landmarks`` (68, 2) crop px; ``mean_texture`` (3, S, S) and ``basis`` (K, 3, S, S) in
    the mean layout, components scaled to one standard deviation; ``shape_weights`` (136, K) the
    landmark regression; ``identity_factor`` (K, K) lower-triangular L.
    """

    def __init__(self, config: AppearanceConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or AppearanceConfig()
        s, k = config.resolution, config.latent_dim
        self.register_buffer("mean_landmarks", torch.zeros(68, 2))
        self.register_buffer("mean_texture", torch.zeros(3, s, s))
        # float16 halves the shipped file (the largest buffer); components are smooth, well
        # inside its precision, and are used in float32.
        self.register_buffer("basis", torch.zeros(k, 3, s, s, dtype=torch.float16))
        self.register_buffer("shape_weights", torch.zeros(136, k))
        self.register_buffer("identity_factor", torch.eye(k))
        if config.grain_fields > 0:
            self.register_buffer("grain_bank", torch.zeros(config.grain_fields, s, s, dtype=torch.float16))
            self.register_buffer("grain_mix", torch.zeros(config.grain_fields, k))
        self.register_buffer("sharpen_kernel", _gaussian_kernel(config.sharpen_sigma), persistent=False)

    def coefficients(self, landmarks: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Texture coefficients (B, K), in standard deviations of each component."""
        cfg = self.config
        offsets = (landmarks.float() - self.mean_landmarks.float()).flatten(1) / cfg.resolution
        identity = z.float().clamp(-cfg.latent_clip, cfg.latent_clip) @ self.identity_factor.float().t()
        return offsets @ self.shape_weights.float() + cfg.temperature * identity

    def texture(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Shape-free textures (B, 3, S, S) of these coefficients."""
        basis = self.basis.float().flatten(1)  # (K, 3*S*S)
        flat = self.mean_texture.float().flatten()[None] + coefficients @ basis
        s = self.config.resolution
        return flat.view(-1, 3, s, s)

    def detailed(self, texture: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``texture`` sharpened and with the latent's grain (see :mod:`streamanon.train.detail`)."""
        cfg = self.config
        if cfg.sharpen > 0:
            channels = texture.shape[1]
            taps = self.sharpen_kernel.to(texture.dtype)
            pad = len(taps) // 2
            # The Gaussian is separable: a row pass, then a column pass (2k taps a pixel, not k^2).
            blurred = F.pad(texture, (pad, pad, pad, pad), mode="replicate")
            blurred = F.conv2d(blurred, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
            blurred = F.conv2d(blurred, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
            texture = texture + cfg.sharpen * (texture - blurred)
        if cfg.grain > 0 and cfg.grain_fields > 0:
            mix = z.float().clamp(-cfg.latent_clip, cfg.latent_clip) @ self.grain_mix.float().t()  # (B, F)
            mix = mix / mix.norm(dim=1, keepdim=True).clamp(min=1e-6)
            grain = (mix @ self.grain_bank.float().flatten(1)).view(-1, 1, *texture.shape[-2:])
            texture = texture + (2.0 * cfg.grain) * grain  # [0, 1] luminance units -> [-1, 1] texture
        return texture

    def forward(
        self,
        crop: torch.Tensor,
        mask: torch.Tensor,
        landmarks: torch.Tensor,
        z: torch.Tensor,
        compose: bool = True,
    ) -> torch.Tensor:
        size = self.config.resolution
        texture = self.detailed(self.texture(self.coefficients(landmarks, z)), z)
        mean = self.mean_landmarks.float()[None].expand(landmarks.shape[0], -1, -1)
        raw = warp_points(texture, control_points(mean, size), control_points(landmarks, size), RENDER_LATTICE_STEP)
        raw = raw.to(crop.dtype)
        return compose_output(raw, crop, mask) if compose else raw


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps (2r+1,), r = ceil(3 sigma)."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()
