"""Fréchet distances: FID with the standard TF-ported Inception-v3, and the same distance in
any embedding space (we always report it for dlib's 128-D face embeddings).

The FID network is written out here (torchvision may not be installed) with the layer
names of ``torchvision.models.Inception3`` patched the way ``pytorch-fid`` patches it
for the TensorFlow FID graph (average pools that ignore padding; max pool in the last
block), so the standard ``pt_inception-2015-12-05-6726825d.pth`` state dict loads
strictly. A TorchScript export of the same network (clean-fid/StyleGAN's
``inception-2015-12-05.pt``) is accepted too. The weights cannot be downloaded here:
without a file, FID is reported as unavailable.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

FID_WEIGHTS_NAMES = ("pt_inception-2015-12-05-6726825d.pth", "inception-2015-12-05.pt")
FID_INPUT_SIZE = 299


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))`` (Heusel et al. 2017).

    When the product is near-singular (few samples in a high dimension), ``eps`` is added
    to both diagonals before the square root, as in the reference implementation.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("mean vectors and covariances must have matching shapes")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # A singular product makes sqrtm warn and return inf/NaN; handled just below.
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # imaginary parts are numerical noise
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of feature rows (N, D); N >= 2."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least two feature rows (N, D), got {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance_features(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between two feature sets (N, D) and (M, D); NaN with < 2 rows each.

    With fewer samples than dimensions (a clip's faces in Inception's 2048-D space) the
    covariances are low-rank and ``sqrtm`` of a D x D product is slow and ill-conditioned.
    Then ``Tr sqrt(S1 S2)`` is computed exactly from the small (N, M) cross-product of the
    centred features: the non-zero eigenvalues of ``S1 S2`` are the squared singular
    values of ``A B^T / sqrt((N-1)(M-1))``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    if min(len(x), len(y)) > x.shape[1]:
        return frechet_distance(*feature_statistics(x), *feature_statistics(y))
    a, b = x - x.mean(0), y - y.mean(0)
    scale = np.sqrt((len(x) - 1) * (len(y) - 1))
    diff = x.mean(0) - y.mean(0)
    trace_sqrt = float(np.linalg.svd(a @ b.T, compute_uv=False).sum() / scale)
    value = float(diff @ diff + (a * a).sum() / (len(x) - 1) + (b * b).sum() / (len(y) - 1) - 2.0 * trace_sqrt)
    return max(value, 0.0)


# ------------------------------------------------------------------------------------------
# Inception-v3 for FID


def find_inception_weights(explicit: str | os.PathLike | None = None) -> Path | None:
    """The FID weights file: ``explicit``, else ``$STREAMANON_MODELS``, else the torch hub cache.

    Returns None when no file is found (FID is then reported as unavailable); an explicit
    path that does not exist is a :class:`UserError`.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"Inception weights not found: {path}")
        return path
    folders = []
    if os.environ.get("STREAMANON_MODELS"):
        folders.append(Path(os.environ["STREAMANON_MODELS"]))
    # Where pytorch-fid / torch.hub cache the file after their first download.
    torch_home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"))
    folders.append(torch_home / "hub" / "checkpoints")
    for folder in folders:
        for name in FID_WEIGHTS_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def _build_inception():
    """The FID Inception-v3 as an ``nn.Module`` (random weights until a state dict is loaded)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class BasicConv2d(nn.Module):
        def __init__(self, cin: int, cout: int, **kwargs: Any) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)), inplace=True)

    def avg_pool_tf(x):
        # TensorFlow's average pool does not count the zero padding.
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class InceptionA(nn.Module):
        def __init__(self, cin: int, pool_features: int) -> None:
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
            self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
            self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

        def forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(avg_pool_tf(x))], 1)

    class InceptionB(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

        def forward(self, x):
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class InceptionC(nn.Module):
        def __init__(self, cin: int, c7: int) -> None:
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                          self.branch7x7dbl_5):
                bd = layer(bd)
            return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(avg_pool_tf(x))], 1)

    class InceptionD(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
            self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

        def forward(self, x):
            b3 = self.branch3x3_2(self.branch3x3_1(x))
            b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
            return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class InceptionE(nn.Module):
        def __init__(self, cin: int, max_pool: bool) -> None:
            super().__init__()
            self.max_pool = max_pool
            self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
            self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
            self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
            self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            # The FID graph's last block max-pools here (a quirk of that TF export).
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else avg_pool_tf(x)
            return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)

    class FIDInceptionV3(nn.Module):
        """Input (N, 3, H, W) RGB in [0, 1]; output (N, 2048) pool3 features."""

        def __init__(self) -> None:
            super().__init__()
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
            self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
            self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
            self.Mixed_5b = InceptionA(192, 32)
            self.Mixed_5c = InceptionA(256, 64)
            self.Mixed_5d = InceptionA(288, 64)
            self.Mixed_6a = InceptionB(288)
            self.Mixed_6b = InceptionC(768, 128)
            self.Mixed_6c = InceptionC(768, 160)
            self.Mixed_6d = InceptionC(768, 160)
            self.Mixed_6e = InceptionC(768, 192)
            self.Mixed_7a = InceptionD(768)
            self.Mixed_7b = InceptionE(1280, max_pool=False)
            self.Mixed_7c = InceptionE(2048, max_pool=True)
            self.fc = nn.Linear(2048, 1008)  # unused by FID; present so the state dict loads strictly

        def forward(self, x):
            x = F.interpolate(x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
            x = 2 * x - 1  # [0, 1] -> [-1, 1], the TF graph's input range
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                         "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
                x = getattr(self, name)(x)
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    return FIDInceptionV3()


class InceptionFID:
    """Pool3 features of the FID Inception-v3, loaded from a weights file.

    ``path`` may hold the pytorch-fid state dict or a TorchScript module with clean-fid's
    calling convention (``module(images_0_255, return_features=True)``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import torch

        self.path = Path(path)
        self._scripted = None
        self._model = None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - not a plain state dict: try TorchScript next
            state = None
        if isinstance(state, dict):
            model = _build_inception()
            missing, unexpected = model.load_state_dict(state, strict=False)
            # Old exports lack BatchNorm's num_batches_tracked counters; nothing else may differ.
            missing = [k for k in missing if not k.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise UserError(
                    f"{self.path} is not the FID Inception-v3 state dict "
                    f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
                )
            self._model = model.eval()
            return
        try:
            self._scripted = torch.jit.load(str(self.path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot load Inception weights {self.path}: {exc}") from None

    def features(self, images: list[np.ndarray] | np.ndarray, batch: int = 16) -> np.ndarray:
        """(N, 2048) features of RGB uint8 images (each (H, W, 3), any size)."""
        import torch
        from torch.nn import functional as F

        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                chunk = [np.asarray(im) for im in images[i : i + batch]]
                x = torch.stack(
                    [
                        F.interpolate(
                            torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].float(),
                            size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False,
                        )[0]
                        for im in chunk
                    ]
                )
                if self._model is not None:
                    feats = self._model(x / 255.0)
                else:
                    feats = self._scripted(x, return_features=True)
                out.append(feats.float().reshape(len(chunk), -1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)


def fid_between(originals: list[np.ndarray], anonymized: list[np.ndarray], weights: str | os.PathLike | None) -> dict:
    """FID between two sets of face crops, or ``{"status": "unavailable", ...}`` without weights."""
    path = find_inception_weights(weights)
    if path is None:
        return {
            "status": "unavailable",
            "reason": "no Inception weights (pass --inception-weights or put "
            f"{FID_WEIGHTS_NAMES[0]} in $STREAMANON_MODELS)",
            "value": None,
        }
    if len(originals) < 2 or len(anonymized) < 2:
        return {"status": "unavailable", "reason": "fewer than two faces", "value": None, "weights": str(path)}
    try:
        net = InceptionFID(path)
    except ImportError as exc:  # torch is an optional extra
        return {"status": "unavailable", "reason": f"torch is not installed ({exc})", "value": None, "weights": str(path)}
    value = frechet_distance_features(net.features(originals), net.features(anonymized))
    return {"status": "ok", "value": value, "weights": str(path), "faces": len(originals)}
