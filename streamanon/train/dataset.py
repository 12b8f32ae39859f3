"""Face shards written by ``streamanon train prepare`` and the training dataset that reads them.

A data directory holds ``meta.json`` and ``.npz`` shards (uncompressed; JPEG does not compress
further) per split, each with:

* ``jpeg``: uint8, the JPEG files of all aligned crops concatenated;
* ``offsets``: int64 (N + 1,), crop ``i`` is ``jpeg[offsets[i]:offsets[i + 1]]``;
* ``landmarks``: float16 (N, 68, 2), crop pixels (1/16 px resolution is plenty at 128 px);
* ``coverage``: float16 (N,), share of the face-mask pixels that come from the photo rather
  than from edge replication (the shared face sets are tight crops);
* ``names``: uint8, the source file names, UTF-8, newline separated (provenance).

Masks are not stored: they are recomputed from the landmarks with the same function that the
pipeline's aligner uses, so training and inference see identical face regions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import UserError
from ..faces.align import MIRROR_68
from ..faces.align import face_mask as align_face_mask

DATA_FORMAT = "streamanon.faces"
DATA_VERSION = 1
SPLITS = ("train", "val")

# Horizontal flip of the 68 points: point i of the mirrored face is point FLIP_68[i] of the
# original (left/right partners swap so that labels stay anatomical). The aligner's table.
FLIP_68 = MIRROR_68


def face_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The face region to replace for landmarks in crop pixels -> (size, size) float32 in [0, 1].

    The aligner's own function, so that training masks are exactly the pipeline's masks.
    """
    return align_face_mask(landmarks, size)


def flip_landmarks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Landmarks (68, 2) of the horizontally mirrored crop, re-indexed so that labels stay anatomical."""
    flipped = landmarks[FLIP_68].copy()
    flipped[:, 0] = (size - 1) - flipped[:, 0]
    return flipped


@dataclass
class Shard:
    """One shard loaded in memory."""

    jpeg: np.ndarray
    offsets: np.ndarray
    landmarks: np.ndarray
    names: list[str]
    coverage: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.landmarks.shape[0])

    def image(self, i: int) -> np.ndarray:
        """Decode crop ``i`` as RGB uint8."""
        data = self.jpeg[self.offsets[i] : self.offsets[i + 1]]
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"corrupt JPEG in shard at index {i} ({self.names[i] if i < len(self.names) else '?'})")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_meta(data_dir: str | os.PathLike) -> dict:
    """The ``meta.json`` of a prepared data directory, validated."""
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise UserError(f"{data_dir} is not a prepared face data directory (no meta.json); run 'streamanon train prepare'")
    meta = json.loads(path.read_text())
    if meta.get("format") != DATA_FORMAT:
        raise UserError(f"{path} is not a streamanon face data index")
    return meta


def load_shard(path: str | os.PathLike) -> Shard:
    with np.load(path, allow_pickle=False) as data:
        names = bytes(data["names"]).decode("utf-8").split("\n") if data["names"].size else []
        coverage = data["coverage"] if "coverage" in data.files else None
        return Shard(data["jpeg"], data["offsets"], data["landmarks"], names, coverage)


def load_split(data_dir: str | os.PathLike, split: str) -> list[Shard]:
    """All shards of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'")
    meta = read_meta(data_dir)
    return [load_shard(Path(data_dir) / name) for name in meta["shards"][split]]


class FaceShardDataset:
    """Aligned training faces: ``dataset[(index, flip)]`` -> dict of CHW tensors.

    ``image`` uint8 (3, S, S), ``landmarks`` float32 (68, 2), ``mask`` float32 (1, S, S). The
    index is a ``(index, flip)`` pair so that augmentation is decided by the (seeded) sampler
    and a resumed run sees exactly the same batches.
    """

    def __init__(self, data_dir: str | os.PathLike, split: str = "train") -> None:
        self.data_dir = Path(data_dir)
        self.meta = read_meta(data_dir)
        self.resolution = int(self.meta["resolution"])
        self.shards = load_split(data_dir, split)
        sizes = [len(s) for s in self.shards]
        self._starts = np.cumsum([0] + sizes)
        if self._starts[-1] == 0:
            raise UserError(f"{data_dir} has no '{split}' faces")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Crop (S, S, 3) uint8 and landmarks (68, 2) float32 of one face, unaugmented."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        s = int(np.searchsorted(self._starts, index, side="right") - 1)
        shard, i = self.shards[s], index - int(self._starts[s])
        return shard.image(i), shard.landmarks[i].astype(np.float32)

    def __getitem__(self, key) -> dict:
        import torch

        index, flip = key if isinstance(key, tuple) else (key, False)
        image, landmarks = self.raw(int(index))
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
            landmarks = flip_landmarks(landmarks, self.resolution)
        mask = face_mask(landmarks, self.resolution)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "landmarks": torch.from_numpy(landmarks),
            "mask": torch.from_numpy(mask.astype(np.float32, copy=False))[None],
        }


class StepBatchSampler:
    """Batches of ``(index, flip)`` for steps ``start_step + 1 .. total_steps``.

    Every epoch is a permutation drawn from ``(seed, epoch)`` and flips from the same stream,
    so the batch of any step is a pure function of (seed, step): resuming needs no RNG state.
    """

    def __init__(self, size: int, batch: int, seed: int, start_step: int, total_steps: int, flip: bool = True) -> None:
        if size < batch:
            raise UserError(f"batch size {batch} is larger than the data set ({size} faces)")
        self.size, self.batch, self.seed = size, batch, seed
        self.start_step, self.total_steps, self.flip = start_step, total_steps, flip
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.size)
            flips = rng.random(self.size) < 0.5 if self.flip else np.zeros(self.size, bool)
            self._epoch_cache = (epoch, order, flips)
        return self._epoch_cache[1], self._epoch_cache[2]

    def batch_for_step(self, step: int) -> list[tuple[int, bool]]:
        """The batch of (1-based) ``step``; epochs drop their incomplete last batch."""
        per_epoch = self.size // self.batch
        epoch, slot = divmod(step - 1, per_epoch)
        order, flips = self._epoch(epoch)
        idx = slice(slot * self.batch, (slot + 1) * self.batch)
        return [(int(i), bool(f)) for i, f in zip(order[idx], flips[idx])]

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for step in range(self.start_step + 1, self.total_steps + 1):
            yield self.batch_for_step(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)
