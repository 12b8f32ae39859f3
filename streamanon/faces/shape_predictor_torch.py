"""dlib's shape predictor in PyTorch, batched over faces, with the trees read from dlib's .dat file.

dlib's predictor (an ensemble of regression trees, Kazemi & Sullivan 2014) handles one face
per call: ~3 ms a face on a small CPU, and it holds the GIL, so threads do not help and a GPU
pipeline waits on it. This module runs the same model (``shape_predictor_68_face_landmarks.dat``,
read at load time: no converted copy is shipped) for a whole batch of faces with a few tensor
operations per cascade level, on the CPU or the GPU.

The semantics of ``dlib/image_processing/shape_predictor.h`` it reproduces:

* the shape starts as ``initial_shape``, in coordinates normalised to the face rectangle
  (``x -> left + x * (right - left)``, likewise for y);
* at each cascade level, the least-squares similarity transform from ``initial_shape`` to the
  current shape (dlib's ``find_similarity_transform``, here in its closed 2-D form) moves each
  feature pixel's offset, which is added to its anchor landmark; the result is mapped into the
  image and rounded (``floor(v + 0.5)``, dlib's double -> integer point conversion); a pixel
  outside the image reads 0; a colour pixel reads ``(r + g + b) // 3``;
* each tree starts at node 0 and goes to ``2i + 1`` when
  ``feature[idx1] - feature[idx2] > threshold``, else to ``2i + 2``; the leaf's vector is added
  to the shape.

dlib returns the final points rounded to whole pixels; :meth:`TorchShapePredictor.forward`
returns them unrounded. On the CPU every step is done in dlib's precision and order, so rounded
they are dlib's points exactly (tested on faces, noise and rectangles past the border). On a GPU
the 500 leaf increments of a level are summed in another order (float32 rounding, ~1e-4 px),
which can rarely move a feature pixel across a rounding boundary and a point by a fraction of a
pixel.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..models import cache_dir, resolve_model
from .box_sampling import SummedArea, footprint_half_sides
from .dlib_serial import DlibFormatError, DlibReader, float_blocks


@dataclass(frozen=True)
class ShapePredictorWeights:
    """A dlib shape predictor as arrays: C cascade levels of T trees with S splits (S + 1 leaves)
    each, F feature pixels per level and P landmarks."""

    initial_shape: np.ndarray  # (P, 2) float32, normalised to the face rectangle
    split_features: np.ndarray  # (C, T, S, 2) int64: the two feature pixels each split compares
    thresholds: np.ndarray  # (C, T, S) float32
    leaves: np.ndarray  # (C, T, S + 1, P, 2) float32: shape increments
    anchors: np.ndarray  # (C, F) int64: the landmark each feature pixel hangs from
    deltas: np.ndarray  # (C, F, 2) float32: its offset from that landmark, in initial_shape's frame


def parse_dlib_shape_predictor(data: bytes) -> ShapePredictorWeights:
    """Parse the bytes of a dlib ``shape_predictor`` file (serialization version 1).

    Raises ``DlibFormatError`` when the stream is not one, or when its levels differ in their
    numbers of trees or feature pixels or its trees in depth (dlib's trainer makes none of these).
    """
    r = DlibReader(data)
    r.version((1,), "shape_predictor")
    shape_at = r.pos
    rows, cols = r.int64(), r.int64()
    if cols not in (1, -1) or rows == 0 or abs(rows) % 2:
        raise DlibFormatError(f"initial shape of {abs(rows)}x{abs(cols)} values (expected a column of x, y pairs)")
    # Every leaf is a matrix<float> of the initial shape's size, so it starts with the same bytes.
    header = data[shape_at : r.pos]
    starts, ends, blocks = float_blocks(data, header, abs(rows))
    block_at = {int(s): i for i, s in enumerate(starts)}

    def block(at: int) -> np.ndarray:
        i = block_at.get(at)
        if i is None:
            raise DlibFormatError(f"expected a shape vector at byte {at}")
        r.pos = int(ends[i])
        return blocks[i]

    initial = block(shape_at)
    levels = r.uint64()
    if not levels:
        raise DlibFormatError("a shape predictor without cascade levels")
    splits, thresholds, leaves, tree_counts = [], [], [], set()
    for _ in range(levels):
        trees = r.uint64()
        tree_counts.add(trees)
        for _ in range(trees):
            count = r.uint64()
            tree = [(r.uint64(), r.uint64(), r.real()) for _ in range(count)]  # idx1, idx2, thresh
            splits.append([(i1, i2) for i1, i2, _ in tree])
            thresholds.append([t for _, _, t in tree])
            if r.uint64() != count + 1:
                raise DlibFormatError(f"a tree with {count} splits must have {count + 1} leaves")
            leaves.append([block(r.pos) for _ in range(count + 1)])
    anchors = [[r.uint64() for _ in range(r.uint64())] for _ in range(r.uint64())]
    deltas = []
    for _ in range(r.uint64()):
        n = r.uint64()
        deltas.append([(r.real(), r.real()) for _ in range(n)])
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} unexpected bytes after the shape predictor")
    if len(anchors) != levels or len(deltas) != levels:
        raise DlibFormatError(f"{levels} cascade levels but {len(anchors)} anchor and {len(deltas)} offset lists")
    if len(tree_counts) > 1 or len({len(s) for s in splits}) > 1 or len({len(a) for a in anchors + deltas}) > 1:
        raise DlibFormatError("levels of different tree or feature pixel counts, or trees of unequal depth")
    parts = abs(rows) // 2
    trees = tree_counts.pop()
    split_array = np.array(splits, np.int64).reshape(levels, trees, -1, 2)
    if split_array.size and split_array.max() >= len(anchors[0]):
        raise DlibFormatError("a split uses a feature pixel that does not exist")
    anchor_array = np.array(anchors, np.int64)
    if anchor_array.size and anchor_array.max() >= parts:
        raise DlibFormatError("a feature pixel hangs from a landmark that does not exist")
    return ShapePredictorWeights(
        initial_shape=initial.reshape(parts, 2),
        split_features=split_array,
        thresholds=np.array(thresholds, np.float32).reshape(levels, trees, -1),
        leaves=np.array(leaves, np.float32).reshape(levels, trees, -1, parts, 2),
        anchors=anchor_array,
        deltas=np.array(deltas, np.float32).reshape(levels, -1, 2),
    )


def load_dlib_shape_predictor(path: str | os.PathLike, cache: bool = True) -> ShapePredictorWeights:
    """Read and parse a dlib shape predictor file; ``UserError`` (one line) when it is not one.

    Parsing the 100 MB 68-point file takes ~4 s; with ``cache`` the arrays are kept in
    :func:`streamanon.models.cache_dir` under the file's SHA-256 (~70 MB, loaded in well under a second) and
    reused while the file is unchanged. A cache that cannot be read or written is ignored.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read dlib shape predictor {path}: {exc.strerror or exc}") from None
    cached = cache_dir() / f"shape_predictor-{hashlib.sha256(data).hexdigest()[:24]}.npz" if cache else None
    if cached is not None and cached.is_file():
        try:
            with np.load(cached) as arrays:
                return ShapePredictorWeights(**{name: arrays[name] for name in _WEIGHT_FIELDS})
        except (OSError, ValueError, KeyError, TypeError):  # damaged or older: parse again below
            pass
    try:
        weights = parse_dlib_shape_predictor(data)
    except DlibFormatError as exc:
        raise UserError(f"{path} is not a dlib shape predictor: {exc}") from None
    if cached is not None:
        _write_cache(cached, weights)
    return weights


_WEIGHT_FIELDS = tuple(f.name for f in fields(ShapePredictorWeights))


def _write_cache(target: Path, weights: ShapePredictorWeights) -> None:
    """Write ``weights`` to ``target`` atomically (a temporary file renamed); failures are ignored."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".tmp-", suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **{name: getattr(weights, name) for name in _WEIGHT_FIELDS})
        os.replace(tmp.name, target)
    except OSError:
        if "tmp" in locals():
            Path(tmp.name).unlink(missing_ok=True)


class TorchShapePredictor(nn.Module):
    """A dlib shape predictor run on batches of faces (see the module docstring).

    Args:
        weights: the parsed predictor (:func:`load_dlib_shape_predictor`).
    """

    def __init__(self, weights: ShapePredictorWeights) -> None:
        super().__init__()
        levels, trees, splits = weights.thresholds.shape
        self.levels, self.trees, self.splits = levels, trees, splits
        self.depth = int(np.log2(splits + 1))
        if 2**self.depth != splits + 1:
            raise UserError(f"shape predictor trees with {splits} splits are not complete binary trees")
        # Per level, flattened so that one gather reads all trees: both feature pixels of every
        # split (T * S * 2), every threshold (T * S) and every leaf (T * (S + 1) rows of 2P).
        self.register_buffer("split_features", torch.from_numpy(weights.split_features).reshape(levels, -1))
        self.register_buffer("thresholds", torch.from_numpy(weights.thresholds).reshape(levels, trees, splits))
        self.register_buffer("leaves", torch.from_numpy(weights.leaves).reshape(levels, trees * (splits + 1), -1))
        self.register_buffer("anchors", torch.from_numpy(weights.anchors))
        self.register_buffer("deltas", torch.from_numpy(weights.deltas))
        initial = torch.from_numpy(weights.initial_shape)
        self.register_buffer("initial_shape", initial)
        self.register_buffer("similarity_basis", _similarity_basis(initial))
        # Which leaf each pattern of split outcomes leads to, so a tree is walked in one lookup.
        self.register_buffer("split_weights", 2 ** torch.arange(splits))
        self.register_buffer("leaf_of_outcomes", _leaf_table(self.depth))

    @classmethod
    def from_dlib_file(cls, path: str | os.PathLike | None = None) -> TorchShapePredictor:
        """The predictor in ``path`` (default: dlib's 68-point model from the model registry)."""
        return cls(load_dlib_shape_predictor(resolve_model("dlib_landmarks68", path)))

    @torch.no_grad()
    def forward(self, images: torch.Tensor, rects: torch.Tensor) -> torch.Tensor:
        """Landmarks (B, P, 2) float32 in image pixels, unrounded.

        Args:
            images: (B, H, W) grey or (B, H, W, 3) RGB images, uint8 (or float holding 0-255
                integers), all of one size; RGB is read as dlib reads it, ``(r + g + b) // 3``.
            rects: (B, 4) face rectangles ``left, top, right, bottom`` in dlib's convention
                (inclusive corners), one per image.
        """
        if images.ndim == 4 and images.shape[-1] == 3:
            images = dlib_grey(images)
        if images.ndim != 3 or tuple(rects.shape) != (images.shape[0], 4):
            raise UserError(
                f"expected (B, H, W[, 3]) images and (B, 4) rects, got {tuple(images.shape)}, {tuple(rects.shape)}"
            )
        return self.run(ImagePixels(images.to(self.initial_shape.device)), rects)

    @torch.no_grad()
    def run(self, pixels: PixelSource, rects: torch.Tensor) -> torch.Tensor:
        """Landmarks (B, P, 2) float32, unrounded, in the pixels of ``pixels``' images (B of them),
        in ``rects`` (B, 4) as in :meth:`forward`."""
        batch, device = pixels.batch, self.initial_shape.device
        rects = rects.to(device=device, dtype=torch.float64)
        origin, scale = rects[:, None, :2], (rects[:, 2:] - rects[:, :2])[:, None]
        leaf_base = torch.arange(self.trees, device=device) * (self.splits + 1)
        faces = None  # the face of each (face, tree) row, for adding leaves in dlib's order
        if _adds_in_dlib_order(device):
            faces = torch.arange(batch, device=device).repeat_interleave(self.trees)
        shape = self.initial_shape.expand(batch, -1, -1).clone()
        for level in range(self.levels):
            # dlib: tform (float 2x2) * delta + anchor location, in the normalised frame; then
            # to pixels in double and rounded. Products summed as two float32 terms, like dlib.
            a, b = (shape.reshape(batch, -1).double() @ self.similarity_basis).float().unbind(1)
            dx, dy = self.deltas[level].unbind(1)
            anchored = shape.index_select(1, self.anchors[level])
            # [[a, -b], [b, a]] @ delta in float32 as dlib does it (a * dx + (-b) * dy), plus the anchor.
            offsets = torch.stack([dx * a[:, None] - dy * b[:, None], dx * b[:, None] + dy * a[:, None]], -1) + anchored
            features = pixels.read(torch.floor(offsets.double() * scale + origin + 0.5).long())
            pairs = features.index_select(1, self.split_features[level]).reshape(batch, self.trees, self.splits, 2)
            goes_left = (pairs[..., 0] - pairs[..., 1]) > self.thresholds[level]  # (B, T, S)
            outcomes = (goes_left * self.split_weights).sum(-1)  # (B, T): bit i = split i goes left
            leaf = self.leaf_of_outcomes[outcomes] + leaf_base
            shape = self._add_leaves(shape, leaf, faces, level)
        return (shape.double() * scale + origin).float()

    def _add_leaves(self, shape: torch.Tensor, leaf: torch.Tensor, faces: torch.Tensor | None,
                    level: int) -> torch.Tensor:  # fmt: skip
        """``shape`` plus the leaves (B, T) of this level. With ``faces`` (the CPU) the increments
        are added one tree after another in float32, in dlib's order, so the result is dlib's to the
        bit; without, they are summed first (an order difference of ~1e-6 of the face size)."""
        batch = shape.shape[0]
        if faces is not None:
            rows = self.leaves[level].index_select(0, leaf.reshape(-1))
            return shape.reshape(batch, -1).index_add(0, faces, rows).reshape(shape.shape)
        return shape + F.embedding_bag(leaf, self.leaves[level], mode="sum").reshape(shape.shape)


class PixelSource(Protocol):
    """What the cascade reads its feature pixels from: B images of one size."""

    batch: int

    def read(self, where: torch.Tensor) -> torch.Tensor:
        """Grey values (B, F) float32 at integer pixels ``where`` (B, F, 2) x, y; 0 outside the image."""
        ...


class ImagePixels:
    """Feature pixels read from a batch of grey images (B, H, W), as dlib reads its image."""

    def __init__(self, images: torch.Tensor) -> None:
        self.batch, height, width = images.shape
        self.pixels = images.to(torch.float32).reshape(self.batch, height * width)
        self.last_pixel = torch.tensor([width - 1, height - 1], device=images.device)
        self.row_stride = torch.tensor([1, width], device=images.device)

    def read(self, where: torch.Tensor) -> torch.Tensor:
        clamped = torch.minimum(where.clamp(min=0), self.last_pixel)
        inside = (where == clamped).all(dim=-1)
        return self.pixels.gather(1, (clamped * self.row_stride).sum(-1)) * inside


class FramePixels:
    """Feature pixels of B virtual crops of one frame, read where the cascade asks, without
    cutting the crops: what ``LandmarkPredictor`` sees on the host, sampled on the frame's device.

    A crop pixel is the frame's grey averaged over a square around the point the crop -> frame map
    sends it to (``box_sampling``: bilinear where the crop magnifies, an area filter where it
    shrinks, as the host path's warp), rounded to a whole grey level.

    Args:
        frame: (H, W) grey or (H, W, 3) RGB frame (RGB read as dlib reads it).
        to_frame: (B, 2, 3) crop -> frame affine maps, one per face.
        crop_size: side of the square crops, pixels; outside it a pixel reads 0, as in dlib.
    """

    def __init__(self, frame: torch.Tensor, to_frame: torch.Tensor, crop_size: int) -> None:
        self._allocate(frame.shape[0], frame.shape[1], int(to_frame.shape[0]), crop_size, frame.device)
        self.load(frame, to_frame)

    @classmethod
    def allocate(cls, height: int, width: int, batch: int, crop_size: int, device: torch.device,
                 summed: torch.Tensor | None = None) -> FramePixels:  # fmt: skip
        """Buffers for frames of ``height`` x ``width`` and ``batch`` faces, to :meth:`load` later;
        ``summed``: a (1, (H + 1) * (W + 1)) float64 summed-area table buffer to share."""
        pixels = cls.__new__(cls)
        pixels._allocate(height, width, batch, crop_size, device, summed)
        return pixels

    def _allocate(self, height: int, width: int, batch: int, crop_size: int, device: torch.device,
                  summed: torch.Tensor | None = None) -> None:  # fmt: skip
        self.batch, self.crop_size = batch, int(crop_size)
        self.area = SummedArea(height, width, 1, device, table=summed)
        self.to_frame = torch.zeros(batch, 2, 3, dtype=torch.float64, device=device)
        self.half_side = torch.zeros(batch, 1, dtype=torch.float64, device=device)

    def load(self, frame: torch.Tensor, to_frame: torch.Tensor) -> None:
        """Take a frame and the faces' crop -> frame maps, written into this object's buffers
        (so that a CUDA graph captured around it reads each new frame)."""
        grey = dlib_grey(frame) if frame.ndim == 3 else frame
        if tuple(grey.shape) != (self.area.height, self.area.width) or tuple(to_frame.shape) != (self.batch, 2, 3):
            raise UserError(f"FramePixels for {self.batch} faces of a {self.area.width}x{self.area.height} frame "
                            f"got {tuple(to_frame.shape)} maps and a {tuple(grey.shape)} frame")  # fmt: skip
        self.area.load(grey)
        self.to_frame.copy_(to_frame)
        self.half_side.copy_(footprint_half_sides(self.to_frame)[:, None])

    def read(self, where: torch.Tensor) -> torch.Tensor:
        inside = ((where >= 0) & (where < self.crop_size)).all(dim=-1)
        points = where.double() @ self.to_frame[:, :, :2].transpose(1, 2) + self.to_frame[:, None, :, 2]
        means = self.area.means(points, self.half_side)[..., 0]
        return (torch.floor(means + 0.5) * inside).float()


@dataclass
class _Captured:
    """One captured CUDA graph and the buffers it reads and writes."""

    graph: torch.cuda.CUDAGraph
    frame: torch.Tensor
    to_frame: torch.Tensor
    rects: torch.Tensor
    points: torch.Tensor


class FrameGraphs:
    """``predictor.run`` on :class:`FramePixels` replayed as CUDA graphs: one launch a frame
    instead of ~1000 small kernels (15 levels of gathers and comparisons), one graph per face
    count and frame size, captured the first time that pair is seen.

    Args:
        predictor: a :class:`TorchShapePredictor` on a CUDA device.
        crop_size: side of the virtual crops (as for :class:`FramePixels`).
        max_faces: face counts above this run without a graph.

    The graphs of one frame size share the frame's buffer and its summed-area table, and all
    graphs share one memory pool: they replay one after another, and each output is copied out
    at once.
    """

    def __init__(self, predictor: TorchShapePredictor, crop_size: int, max_faces: int = 16) -> None:
        self.predictor = predictor
        self.crop_size = int(crop_size)
        self.max_faces = int(max_faces)
        self._graphs: dict[tuple, _Captured] = {}
        self._frames: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # frame buffer, summed-area table
        self._pool = None

    def __call__(self, frame: torch.Tensor, to_frame: torch.Tensor, rects: torch.Tensor) -> torch.Tensor:
        """Landmarks (B, P, 2) as ``predictor.run(FramePixels(frame, to_frame, crop_size), rects)``."""
        device = self.predictor.initial_shape.device
        to_frame = to_frame.to(device=device, dtype=torch.float64)
        rects = rects.to(device=device, dtype=torch.float64)
        if len(to_frame) > self.max_faces:
            return self.predictor.run(FramePixels(frame, to_frame, self.crop_size), rects)
        key = (len(to_frame), *frame.shape, frame.dtype)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(frame, to_frame, rects)
        captured.frame.copy_(frame)
        captured.to_frame.copy_(to_frame)
        captured.rects.copy_(rects)
        captured.graph.replay()
        return captured.points.clone()  # the next replay overwrites the graph's output

    def _capture(self, frame: torch.Tensor, to_frame: torch.Tensor, rects: torch.Tensor) -> _Captured:
        height, width = frame.shape[:2]
        frame_key = (*frame.shape, frame.dtype)
        if frame_key not in self._frames:
            table = torch.zeros(1, (height + 1) * (width + 1), dtype=torch.float64, device=frame.device)
            self._frames[frame_key] = (frame.clone(), table)
        static_frame, table = self._frames[frame_key]
        static_to_frame, static_rects = to_frame.clone(), rects.clone()
        pixels = FramePixels.allocate(height, width, len(to_frame), self.crop_size, frame.device, summed=table)

        def landmarks() -> torch.Tensor:
            pixels.load(static_frame, static_to_frame)
            return self.predictor.run(pixels, static_rects)

        # Warm up on a side stream (as torch.cuda.graphs documents), then capture.
        side = torch.cuda.Stream(device=frame.device)
        side.wait_stream(torch.cuda.current_stream(frame.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                landmarks()
        torch.cuda.current_stream(frame.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work of other threads (the identity guard's) may go on meanwhile.
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            points = landmarks()
        return _Captured(graph, static_frame, static_to_frame, static_rects, points)


def _adds_in_dlib_order(device: torch.device) -> bool:
    """Whether leaves are added one at a time in dlib's order: on the CPU, where index_add runs
    sequentially; CUDA's index_add uses atomics (no fixed order), so there they are summed."""
    return device.type == "cpu"


def dlib_grey(rgb: torch.Tensor) -> torch.Tensor:
    """(..., H, W, 3) uint8 RGB -> (..., H, W) int32 grey as dlib reads a colour pixel: (r + g + b) // 3."""
    return rgb.to(torch.int32).sum(dim=-1).div(3, rounding_mode="floor")


def _leaf_table(depth: int) -> torch.Tensor:
    """(2**S,) the leaf (0..S) a complete tree of ``depth`` reaches for each pattern of its S split
    outcomes (bit i set: split i goes left). Node i's children are 2i + 1 (left) and 2i + 2."""
    splits = 2**depth - 1
    if splits > 20:
        raise UserError(f"shape predictor trees of depth {depth} are deeper than supported (at most 4)")
    outcomes = torch.arange(2**splits)
    node = torch.zeros_like(outcomes)
    for _ in range(depth):
        node = 2 * node + 2 - ((outcomes >> node) & 1)
    return node - splits


def _similarity_basis(source: torch.Tensor) -> torch.Tensor:
    """(2P, 2) float64 K such that ``target.reshape(-1) @ K = (a, b)``: the least-squares
    similarity ``[[a, -b], [b, a]]`` from ``source`` (P, 2) onto ``target`` (P, 2).

    This is the closed 2-D form of Umeyama's method (dlib's ``find_similarity_transform``): the
    rotation that maximises ``trace(R^T cov)`` has angle ``atan2(cov10 - cov01, cov00 + cov11)``
    and the scale is that maximum over the source's variance, so ``a = sum(t . s) / sum|s|^2``
    and ``b = sum(t x s) / sum|s|^2`` over centred points. Centring the target is not needed:
    the centred source sums to zero.
    """
    src = source.double() - source.double().mean(dim=0)
    norm = (src**2).sum()
    dot = src / norm  # a: t_x s_x + t_y s_y
    cross = torch.stack([-src[:, 1], src[:, 0]], dim=1) / norm  # b: t_y s_x - t_x s_y
    return torch.stack([dot.reshape(-1), cross.reshape(-1)], dim=1)
