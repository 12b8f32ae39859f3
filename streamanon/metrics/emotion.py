"""Facial-expression classifier (FER2013's seven classes) used for emotion agreement.

The network is a compact VGG-style CNN trained by ``streamanon train emotion``
(:mod:`streamanon.train.emotion`) on 48x48 grayscale FER2013 faces; it sees 40x40 crops.
The checkpoint is a plain dict (``state_dict`` + metadata) loadable with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError
from ..models import resolve_model

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_SIZE = 48  # FER2013 image side
CROP_SIZE = 40  # the network's input side: crops of the 48x48 face


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class EmotionNet(nn.Module):
    """Four stages of two 3x3 conv+BN+ReLU (width w, 2w, 4w, 8w), max-pool between, GAP head.

    Input: (B, 1, 40, 40) float, normalised with the checkpoint's ``mean``/``std``.
    Output: (B, 7) logits in :data:`FER_CLASSES` order.
    """

    def __init__(self, width: int = 32, num_classes: int = 7, dropout: float = 0.4) -> None:
        super().__init__()
        w = width
        layers: list[nn.Module] = []
        cin = 1
        for stage, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            if stage:
                layers.append(nn.MaxPool2d(2))
            layers += _conv_bn(cin, cout) + _conv_bn(cout, cout)
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def tta_views(x: torch.Tensor, mode: str = "tencrop") -> torch.Tensor:
    """Test-time views of (B, 1, 48, 48) faces -> (V, B, 1, 40, 40).

    ``"flip"``: centre crop and its mirror. ``"tencrop"``: centre + four corner crops, each
    also mirrored (the training crops wander +-4 px, so corners are in-distribution).
    """
    m = (FER_SIZE - CROP_SIZE) // 2
    offsets = [(m, m)]
    if mode == "tencrop":
        offsets += [(0, 0), (0, 2 * m), (2 * m, 0), (2 * m, 2 * m)]
    elif mode != "flip":
        raise ValueError(f"unknown TTA mode {mode!r}")
    views = [x[:, :, r : r + CROP_SIZE, c : c + CROP_SIZE] for r, c in offsets]
    views += [torch.flip(v, dims=[3]) for v in views]
    return torch.stack(views)


@torch.no_grad()
def predict_logits(
    model: EmotionNet, faces48: np.ndarray, mean: float, std: float, tta: str = "tencrop", batch: int = 256
) -> np.ndarray:
    """Mean softmax over TTA views for uint8 faces (N, 48, 48); returns (N, 7) probabilities."""
    model.eval()
    out = []
    for i in range(0, len(faces48), batch):
        x = torch.from_numpy(np.ascontiguousarray(faces48[i : i + batch])).float().unsqueeze(1)
        x = (x / 255.0 - mean) / std
        views = tta_views(x, tta)
        v, b = views.shape[:2]
        probs = F.softmax(model(views.reshape(v * b, *views.shape[2:])).float(), dim=1)
        out.append(probs.reshape(v, b, -1).mean(0).numpy())
    if not out:
        return np.zeros((0, len(FER_CLASSES)), np.float32)
    return np.concatenate(out)


def face_crop48(image_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """Cut a FER2013-like 48x48 grayscale face from a frame, given its 68 landmarks.

    FER faces are upright, roughly centred and span brow-to-chin with a little forehead;
    we rotate by the eye line and take a square of 1.15x the landmark extent, centred
    slightly above the landmark centre to include that forehead.
    """
    pts = np.asarray(landmarks68, np.float64)
    left_eye, right_eye = pts[36:42].mean(0), pts[42:48].mean(0)
    angle = np.degrees(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    centre = pts.mean(0)
    rot = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), 1.0)
    upright = pts @ rot[:, :2].T + rot[:, 2]
    lo, hi = upright.min(0), upright.max(0)
    side = 1.15 * float(max(hi - lo))
    cx, cy = (lo + hi) / 2.0
    cy -= 0.06 * side
    scale = FER_SIZE / max(side, 1.0)
    # frame -> crop: rotate upright, then move the square's corner to 0 and scale.
    shift = np.array([[scale, 0, -scale * (cx - side / 2)], [0, scale, -scale * (cy - side / 2)]])
    matrix = shift @ np.vstack([rot, [0, 0, 1]])
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    return cv2.warpAffine(gray, matrix, (FER_SIZE, FER_SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


class EmotionClassifier:
    """Loads the shipped (or an explicit) checkpoint and labels faces.

    Raises :class:`~streamanon.errors.ModelUnavailable` when no checkpoint is found.
    """

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        path = resolve_model("emotion", weights)
        try:
            ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt or foreign file: say which one
            raise UserError(f"cannot load emotion weights {path}: {exc}") from None
        self.path = Path(path)
        self.classes: tuple[str, ...] = tuple(ckpt.get("classes", FER_CLASSES))
        self.mean = float(ckpt["mean"])
        self.std = float(ckpt["std"])
        self.tta = str(ckpt.get("tta", "tencrop"))
        self.test_accuracy = ckpt.get("test_accuracy")
        self.model = EmotionNet(width=int(ckpt.get("width", 32)), num_classes=len(self.classes))
        self.model.load_state_dict(ckpt["state_dict"])
        self.model.eval()

    def predict_proba48(self, faces48: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 7) for uint8 grayscale faces (N, 48, 48)."""
        faces48 = np.asarray(faces48)
        if faces48.ndim != 3 or faces48.shape[1:] != (FER_SIZE, FER_SIZE):
            raise ValueError(f"expected (N, 48, 48) faces, got {faces48.shape}")
        return predict_logits(self.model, faces48, self.mean, self.std, self.tta)

    def predict48(self, faces48: np.ndarray) -> np.ndarray:
        """Class indices (N,) for uint8 grayscale faces (N, 48, 48)."""
        return self.predict_proba48(faces48).argmax(1)

    def predict(self, image_rgb: np.ndarray, landmarks: Sequence[np.ndarray]) -> np.ndarray:
        """Class index per face of one frame, each face given by its (68, 2) landmarks."""
        if len(landmarks) == 0:
            return np.zeros((0,), np.int64)
        crops = np.stack([face_crop48(image_rgb, lm) for lm in landmarks])
        return self.predict48(crops)
