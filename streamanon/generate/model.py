"""Landmark-conditioned U-Net generator (DeepPrivacy-style) and the networks used to train it.

Generator input: the aligned crop with the face region removed, the binary mask, landmark
heatmaps and a latent code; output: the full crop, whose context (outside the mask) is the
input's own pixels. The masking happens inside ``Generator.forward``, so no caller can leak the
original face into it by mistake.

Layers follow StyleGAN2's recipe (equalized learning rate, modulated/demodulated convolutions
driven by a mapping network, activations clamped for float16) because it is a known-stable way
to train a GAN with Adam at lr 2e-3 and to make the latent code matter: the code modulates every
decoder convolution, so different codes give different identities for the same pose.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .condition import binary_mask, heatmap_channels, landmark_heatmaps, masked_input

# Bound on activations; keeps float16 inference away from its 65504 limit (StyleGAN2-ADA).
ACT_CLAMP = 256.0
LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the generator; stored in every checkpoint so weights rebuild their model."""

    resolution: int = 128
    base_channels: int = 32  # channels at full resolution; doubled per level
    max_channels: int = 256
    bottleneck: int = 8  # spatial size of the deepest U-Net level
    latent_dim: int = 64
    w_dim: int = 256
    mapping_layers: int = 2
    heatmap_mode: str = "groups"  # "groups" (9 channels) or "points" (68)
    heatmap_sigma: float = 1 / 64  # Gaussian sigma as a fraction of the resolution

    def __post_init__(self) -> None:
        if self.resolution < self.bottleneck or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of two >= {self.bottleneck}, got {self.resolution}")
        heatmap_channels(self.heatmap_mode)

    @property
    def levels(self) -> int:
        """Number of U-Net levels, full resolution down to the bottleneck inclusive."""
        return int(math.log2(self.resolution // self.bottleneck)) + 1

    def channels(self, level: int) -> int:
        return min(self.base_channels * 2**level, self.max_channels)

    @property
    def sigma_px(self) -> float:
        return self.heatmap_sigma * self.resolution

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GeneratorConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with variance-preserving gain and the float16 clamp."""
    return (F.leaky_relu(x, 0.2) * LRELU_GAIN).clamp(-ACT_CLAMP, ACT_CLAMP)


class EqLinear(nn.Module):
    """Linear layer with equalized learning rate (weights N(0,1), scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqConv2d(nn.Module):
    """Conv2d with equalized learning rate, 'same' padding, optional stride 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.stride = stride
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class ModConv2d(nn.Module):
    """StyleGAN2 modulated 3x3 convolution, written as scale -> conv -> demodulate.

    This "non-fused" form keeps the convolution weights static (one conv for the whole batch),
    which TensorRT and CUDA graphs handle; the per-sample work is two channel-wise products.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel: int = 3, demodulate: bool = True) -> None:
        super().__init__()
        self.affine = EqLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1: plain conv
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.padding = kernel // 2
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.scale
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = F.conv2d(x, weight, None, padding=self.padding)
        if self.demodulate:
            # Demodulation factor in float32: sums of squares are where float16 would overflow.
            w2 = weight.float().square().sum(dim=(2, 3))  # (out, in)
            demod = torch.rsqrt(styles.float().square() @ w2.t() + 1e-8)  # (B, out)
            x = x * demod.to(x.dtype)[:, :, None, None]
        return x + self.bias.to(x.dtype)[None, :, None, None]


class MappingNetwork(nn.Module):
    """z -> w: normalizes the latent and maps it through a small MLP (lr multiplier 0.01)."""

    def __init__(self, latent_dim: int, w_dim: int, layers: int) -> None:
        super().__init__()
        dims = [latent_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(EqLinear(a, b, lr_mul=0.01) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.float() * torch.rsqrt(z.float().square().mean(dim=1, keepdim=True) + 1e-8)
        x = x.to(self.layers[0].weight.dtype)  # the model may run in float16 / bfloat16
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * LRELU_GAIN
        return x


class EncoderBlock(nn.Module):
    """Optional stride-2 downsampling conv, then a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, down: bool) -> None:
        super().__init__()
        self.conv0 = EqConv2d(in_channels, out_channels, 3, stride=2 if down else 1)
        self.conv1 = EqConv2d(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrelu(self.conv1(lrelu(self.conv0(x))))


class DecoderBlock(nn.Module):
    """Bilinear x2 upsampling, concatenation with the skip, two modulated convs."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv0 = ModConv2d(in_channels + skip_channels, out_channels, w_dim)
        self.conv1 = ModConv2d(out_channels, out_channels, w_dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = lrelu(self.conv0(torch.cat([x, skip], dim=1), w))
        return lrelu(self.conv1(x, w))


class Generator(nn.Module):
    """Conditional U-Net: (crop, mask, landmarks, z) -> full crop in [-1, 1] (not clamped).

    ``forward`` masks the crop itself; pixels where ``mask > MASK_EPSILON`` never reach the
    network, and the returned crop equals the input outside that region (``compose=True``).
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GeneratorConfig()
        in_channels = 3 + 1 + heatmap_channels(config.heatmap_mode)
        levels = config.levels
        self.mapping = MappingNetwork(config.latent_dim, config.w_dim, config.mapping_layers)
        self.encoder = nn.ModuleList()
        previous = in_channels
        for level in range(levels):
            self.encoder.append(EncoderBlock(previous, config.channels(level), down=level > 0))
            previous = config.channels(level)
        # The bottleneck gets two modulated convs of its own so the latent also shapes the coarse layout.
        self.middle0 = ModConv2d(previous, previous, config.w_dim)
        self.middle1 = ModConv2d(previous, previous, config.w_dim)
        self.decoder = nn.ModuleList()
        for level in reversed(range(levels - 1)):
            out = config.channels(level)
            self.decoder.append(DecoderBlock(previous, config.channels(level), out, config.w_dim))
            previous = out
        self.to_rgb = ModConv2d(previous, 3, config.w_dim, kernel=1, demodulate=False)

    def conditions(self, crop: torch.Tensor, mask: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """The network input: masked crop, hard mask and heatmaps, (B, 4 + C, S, S)."""
        cfg = self.config
        hard = binary_mask(mask.to(crop.dtype))
        heat = landmark_heatmaps(landmarks, crop.shape[-1], cfg.sigma_px, cfg.heatmap_mode).to(crop.dtype)
        return torch.cat([masked_input(crop, mask), hard, heat], dim=1)

    def forward(
        self,
        crop: torch.Tensor,
        mask: torch.Tensor,
        landmarks: torch.Tensor,
        z: torch.Tensor,
        compose: bool = True,
    ) -> torch.Tensor:
        x = self.conditions(crop, mask, landmarks)
        w = self.mapping(z)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = lrelu(self.middle0(x, w))
        x = lrelu(self.middle1(x, w))
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = block(x, skip, w)
        raw = self.to_rgb(x, w)
        return compose_output(raw, crop, mask) if compose else raw


def compose_output(raw: torch.Tensor, crop: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Generated pixels inside the face region, the input crop's own pixels outside it."""
    hard = binary_mask(mask.to(raw.dtype))
    return torch.where(hard > 0, raw, crop.to(raw.dtype))


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs and a 2x average-pool, skip through a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqConv2d(in_channels, in_channels, 3)
        self.conv1 = EqConv2d(in_channels, out_channels, 3)
        self.skip = EqConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.avg_pool2d(lrelu(self.conv1(lrelu(self.conv0(x)))), 2)
        s = self.skip(F.avg_pool2d(x, 2))
        return (y + s) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """Conditional discriminator: (image, mask, landmarks) -> one logit per sample.

    Seeing the mask and landmark heatmaps lets it punish faces that ignore the requested pose
    or expression and seams at the mask border, not only unrealistic textures.
    """

    def __init__(self, config: GeneratorConfig | None = None, base_channels: int = 32, max_channels: int = 256) -> None:
        super().__init__()
        self.config = config = config or GeneratorConfig()
        levels = int(math.log2(config.resolution // 4))
        ch = [min(base_channels * 2**i, max_channels) for i in range(levels + 1)]
        in_channels = 3 + 1 + heatmap_channels(config.heatmap_mode)
        self.from_rgb = EqConv2d(in_channels, ch[0], 1)
        self.blocks = nn.ModuleList(DiscriminatorBlock(ch[i], ch[i + 1]) for i in range(levels))
        last = ch[levels]
        self.conv = EqConv2d(last + 1, last, 3)
        self.fc = EqLinear(last * 16, last)
        self.out = EqLinear(last, 1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        heat = landmark_heatmaps(landmarks, image.shape[-1], cfg.sigma_px, cfg.heatmap_mode).to(image.dtype)
        x = torch.cat([image, binary_mask(mask.to(image.dtype)), heat], dim=1)
        x = lrelu(self.from_rgb(x))
        for block in self.blocks:
            x = block(x)
        x = torch.cat([x, minibatch_std(x)], dim=1)
        x = lrelu(self.conv(x))
        x = lrelu(self.fc(x.flatten(1)))
        return self.out(x).squeeze(1)


def minibatch_std(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """One feature map with the standard deviation across a small group of samples (anti mode collapse)."""
    b, c, h, w = x.shape
    g = min(group, b)
    while b % g:
        g -= 1
    y = x.float().view(g, -1, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # (B/g, C, H, W)
    y = y.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).repeat(g, 1, h, w)
    return y.to(x.dtype)


class LandmarkRegressor(nn.Module):
    """Small heatmap network with soft-argmax: image (B, 3, S, S) -> landmarks (B, 68, 2) crop px.

    Trained on real crops alongside the GAN; its (frozen-per-step) prediction on generated crops
    gives the generator a differentiable landmark-consistency signal.
    """

    def __init__(self, resolution: int = 128, channels: int = 64) -> None:
        super().__init__()
        self.resolution = resolution
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c // 2, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, c, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=4, dilation=4),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=8, dilation=8),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 68, 1),
        )
        # Only the heatmap layout (stride 4) fixes the grid; the image size may differ from training.
        self.temperature = nn.Parameter(torch.tensor(1.0))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.features(image.float()) * self.temperature
        b, k, h, w = logits.shape
        prob = logits.flatten(2).softmax(dim=-1).view(b, k, h, w)
        stride_y = image.shape[-2] / h
        stride_x = image.shape[-1] / w
        ys = (torch.arange(h, device=image.device, dtype=prob.dtype) + 0.5) * stride_y - 0.5
        xs = (torch.arange(w, device=image.device, dtype=prob.dtype) + 0.5) * stride_x - 0.5
        x = (prob.sum(dim=2) * xs).sum(dim=-1)
        y = (prob.sum(dim=3) * ys).sum(dim=-1)
        return torch.stack([x, y], dim=-1)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
