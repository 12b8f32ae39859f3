"""Typed records passed between pipeline stages.

Every stage reads and returns these records rather than positional tuples of arrays.
Images are ``numpy.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, **RGB** order.
Coordinates are pixels in ``(x, y)`` order, boxes are ``x1, y1, x2, y2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import numpy as np


@dataclass
class Frame:
    """One decoded video frame (or still image) with its timing metadata.

    ``pts`` and ``time_base`` travel with the frame so that the sink can keep the
    source's timestamps exactly (variable frame rate survives the round trip).
    """

    image: np.ndarray
    index: int
    pts: int | None = None
    time_base: Fraction | None = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def time(self) -> float | None:
        """Presentation time in seconds, if known."""
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)


@dataclass
class Detections:
    """Face detections of one frame as parallel arrays (one row per face).

    Indexing with an int, slice, index array or boolean mask returns a new
    ``Detections`` with every field sliced the same way.
    """

    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2
    scores: np.ndarray  # (N,) float32
    keypoints: np.ndarray  # (N, 5, 2) float32: eyes, nose, mouth corners (CenterFace order)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            keypoints=np.zeros((0, 5, 2), np.float32),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index) -> "Detections":
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(self.boxes[index], self.scores[index], self.keypoints[index])

    def __iter__(self) -> Iterator["Detections"]:
        for i in range(len(self)):
            yield self[i]

    def __add__(self, other: "Detections") -> "Detections":
        """The rows of both, ``self``'s first."""
        return Detections(np.concatenate([self.boxes, other.boxes]), np.concatenate([self.scores, other.scores]),
                          np.concatenate([self.keypoints, other.keypoints]))  # fmt: skip


@dataclass
class TrackedFace:
    """State of one tracked face in the current frame.

    ``detected`` is False while the track is coasting over missed detections: its
    ``box`` is then the tracker's prediction and the face must still be hidden.
    """

    track_id: int
    box: np.ndarray  # (4,) float32, smoothed x1 y1 x2 y2 (or predicted, when coasting)
    score: float
    detected: bool
    missed: int = 0
    age: int = 0  # frames since the track was born
    raw_box: np.ndarray | None = None  # (4,) this frame's unsmoothed detection, when detected
    keypoints: np.ndarray | None = None  # (5, 2) from the detector, when detected
    landmarks: np.ndarray | None = None  # (68, 2) dlib-order landmarks, smoothed

    @property
    def cover_box(self) -> np.ndarray:
        """The region that must be hidden: the smoothed box united with the raw detection.

        Smoothing lags a moving face; hiding the union keeps that lag from uncovering it.
        """
        if self.raw_box is None:
            return self.box
        return np.concatenate([np.minimum(self.box[:2], self.raw_box[:2]), np.maximum(self.box[2:], self.raw_box[2:])])

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


@dataclass
class AlignedFace:
    """A face warped into the canonical square crop, plus what is needed to paste it back.

    ``matrix`` maps frame coordinates to crop coordinates (2x3 affine, similarity).
    """

    track_id: int
    image: np.ndarray  # (S, S, 3) uint8 aligned crop
    matrix: np.ndarray  # (2, 3) float64, frame -> crop
    landmarks: np.ndarray  # (68, 2) float32 in crop coordinates
    mask: np.ndarray  # (S, S) float32 in [0, 1]: the face region to replace

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class HiddenFace:
    """One face hidden in a frame: where, how, and (generated faces) the landmarks it was given."""

    track_id: int
    box: np.ndarray  # (4,) float32 x1 y1 x2 y2 in frame pixels: the region replaced (before ``margin``)
    detected: bool  # False while the track coasts over a missed detection (hidden on its prediction)
    how: str  # "generated", or the mode that hid it: "blur", "pixelate", "solid"
    fallback: bool = False  # generate mode could not generate it this frame (fail-closed blur)
    landmarks: np.ndarray | None = None  # (68, 2) frame pixels, the expression the generated face keeps


@dataclass
class FrameStats:
    """What the pipeline did to one frame (for progress display, summaries and the faces log)."""

    faces: int = 0  # faces hidden in this frame (detected + coasting)
    detected: int = 0
    coasting: int = 0
    generated: int = 0
    fallback: int = 0  # faces that fell back to blur (fail-closed)
    track_ids: list[int] = field(default_factory=list)
    hidden: list[HiddenFace] = field(default_factory=list)  # one per face, in ``track_ids`` order
