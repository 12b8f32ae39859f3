"""Identity embeddings (dlib ResNet, 128-D) and dlib's HOG face detector, for metrics.

dlib's face recognition network maps a face to a 128-D vector where two photos of the same
person are usually closer than 0.6 (Euclidean) and different people farther apart
(99.38 % on LFW, dlib's figures). The metrics use it to check that anonymized faces no
longer match their source identity. ``DlibHogDetector`` is the independent second
detector of the metrics ("would an off-the-shelf detector still find a face here?").
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import UserError
from ..models import resolve_model
from .detect import as_rgb_uint8

SAME_PERSON_DISTANCE = 0.6  # dlib's threshold for "same identity"
CHIP_SIZE = 150  # the network's input side
CHIP_PADDING = 0.25  # what compute_face_descriptor passes to get_face_chip_details


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.ndim == 2:
        landmarks = landmarks[None]
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise UserError(f"expected (68, 2) or (N, 68, 2) landmarks, got shape {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise UserError("landmarks contain NaN or infinite values")
    return landmarks


def dlib_shapes(landmarks68: np.ndarray):
    """dlib ``full_object_detections`` of (N, 68, 2) checked landmarks, as dlib's chip cutter wants them."""
    import dlib

    shapes = dlib.full_object_detections()
    for landmarks in landmarks68:
        # dlib points are integers; the chip alignment fits a similarity over all 68
        # points, so rounding each by < 0.5 px barely moves it.
        points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
        lo, hi = np.floor(landmarks.min(0)), np.ceil(landmarks.max(0))
        rect = dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
        shapes.append(dlib.full_object_detection(rect, points))
    return shapes


def face_chips(image_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """dlib's aligned (N, 150, 150, 3) uint8 chips of (N, 68, 2) faces, cut as
    ``compute_face_descriptor`` cuts them (size 150, padding 0.25)."""
    import dlib

    image = as_rgb_uint8(image_rgb)
    landmarks = _check_landmarks(landmarks68)
    if len(landmarks) == 0:
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
    chips = dlib.get_face_chips(image, dlib_shapes(landmarks), size=CHIP_SIZE, padding=CHIP_PADDING)
    return np.stack([np.asarray(chip, np.uint8) for chip in chips])


class FaceEmbedder:
    """dlib's ResNet face descriptor from a frame and the face's 68 landmarks.

    Args:
        model_path: explicit ``dlib_face_recognition_resnet_model_v1.dat``; default from
            the model registry.
        num_jitters: > 1 averages over that many jittered copies (slower, a bit steadier).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, num_jitters: int = 0) -> None:
        import dlib

        self._dlib = dlib
        self.model_path = resolve_model("dlib_face_embedding", model_path)
        self.model = dlib.face_recognition_model_v1(str(self.model_path))
        self.num_jitters = int(num_jitters)

    def embed(self, image_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """The (128,) float32 descriptor of the face with these (68, 2) frame landmarks."""
        return self.embed_many(image_rgb, landmarks68)[0]

    def embed_many(self, image_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """Descriptors (N, 128) float32 of several faces (N, 68, 2) of one frame."""
        image = as_rgb_uint8(image_rgb)
        landmarks = _check_landmarks(landmarks68)
        if len(landmarks) == 0:
            return np.zeros((0, 128), np.float32)
        vectors = self.model.compute_face_descriptor(image, dlib_shapes(landmarks), self.num_jitters)
        return np.asarray([np.asarray(v) for v in vectors], np.float32).reshape(-1, 128)

    def chips(self, image_rgb: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        """The (N, 150, 150, 3) uint8 aligned chips the network sees for these (N, 68, 2) faces."""
        return face_chips(image_rgb, landmarks68)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors (N, 128) float32 of chips from :meth:`chips` (the same numbers as ``embed``)."""
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        vectors = self.model.compute_face_descriptor([np.ascontiguousarray(c) for c in chips], self.num_jitters)
        return np.asarray([np.asarray(v) for v in vectors], np.float32).reshape(-1, 128)


def default_embedder(device: str = "cpu"):
    """The fastest exact embedder here: dlib's ResNet run by PyTorch (``TorchFaceEmbedder``, same
    descriptors to ~1e-6, ~10x faster on a CPU) when torch imports, else dlib's own."""
    try:
        import torch  # noqa: F401 - only checking that it imports
    except ImportError:
        return FaceEmbedder()
    from .resnet_torch import TorchFaceEmbedder

    return TorchFaceEmbedder(device=device)


def embedding_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Euclidean distance between descriptors (broadcasts over leading axes).

    Below ``SAME_PERSON_DISTANCE`` (0.6) dlib calls two faces the same person.
    """
    d = np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32), axis=-1)
    return float(d) if np.ndim(d) == 0 else d


class DlibHogDetector:
    """dlib's frontal-face HOG detector: ``detector(image_rgb) -> (N, 4) float32 boxes``.

    Args:
        upsample: times the image is upsampled first (1 finds faces down to ~40 px).
        threshold: score offset; higher keeps fewer, surer detections.
    """

    def __init__(self, upsample: int = 1, threshold: float = 0.0) -> None:
        import dlib

        if upsample < 0:
            raise UserError(f"upsample must be >= 0, got {upsample}")
        self.detector = dlib.get_frontal_face_detector()
        self.upsample = int(upsample)
        self.threshold = float(threshold)

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) float32 x1 y1 x2 y2 and scores (N,) float32, best first."""
        image = as_rgb_uint8(image_rgb)
        rects, scores, _ = self.detector.run(image, self.upsample, self.threshold)
        # dlib rectangles are inclusive: right/bottom are the last pixel inside.
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        return boxes[order], scores[order]

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        """Face boxes (N, 4) float32, best first."""
        return self.detect(image_rgb)[0]

    def detect_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Boxes of each image."""
        return [self(image) for image in images]
