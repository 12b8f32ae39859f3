"""Identity metrics in dlib's 128-D face-embedding space."""

from __future__ import annotations

import numpy as np

# dlib's own same-person threshold for its ResNet embeddings (Euclidean distance).
REID_THRESHOLD = 0.6


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors (0 when either is all zero)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else 0.0


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two embeddings."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def is_reidentified(distance: float, threshold: float = REID_THRESHOLD) -> bool:
    """True when dlib would call the two faces the same person."""
    return bool(distance < threshold)
