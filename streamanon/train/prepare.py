"""``streamanon train prepare``: face image folders -> aligned, landmarked training shards.

Per image: detect with CenterFace (again on a padded copy if nothing is found: faces cut by the
photo border need room), keep the largest face, predict 68 dlib landmarks, align to the
canonical crop with the pipeline's own aligner, and keep the crop (JPEG) and its landmarks.
Failures are counted by reason and dropped. A seeded 5 % of the faces becomes the validation
split. Shards are small enough to travel: measured 2,460 B per 128 px face at the default
quality on 300 faces drawn evenly from the three shared sets, i.e. ~41 MiB for all 17.5k
(``prepare`` reports its own measurement as ``estimate`` in ``meta.json``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from ..errors import UserError
from ..io.images import IMAGE_EXTENSIONS, read_image
from .dataset import DATA_FORMAT, DATA_VERSION


# Quality 75 with optimized Huffman tables: ~39 dB PSNR at ~2.5 KB per 128 px crop, which keeps
# all 17.5k shared faces under 48 MiB (quality 80 would need ~46 MiB: too close to the limit).
DEFAULT_QUALITY = 75
SHARD_FACES = 4096
MIN_FACE = 32.0  # px: smaller detections would be upsampled too much to teach a 128 px generator


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of one ``prepare`` run."""

    size: int = 128
    quality: int = DEFAULT_QUALITY
    val_fraction: float = 0.05
    seed: int = 0
    threshold: float = 0.5  # detection score
    min_face: float = MIN_FACE
    min_coverage: float = 0.0  # drop faces whose mask region lies less than this inside the photo


@dataclass
class PreparedFace:
    """One accepted face: the encoded aligned crop and its landmarks in crop pixels."""

    name: str
    jpeg: bytes
    landmarks: np.ndarray  # (68, 2) float32
    coverage: float  # share of the face-mask pixels that come from the photo (not edge replication)


def list_images(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files of the given folders (recursive, sorted) and files."""
    files: list[Path] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files.extend(sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()))
        elif src.is_file():
            files.append(src)
        else:
            raise UserError(f"source not found: {src}")
    if not files:
        raise UserError(f"no images found in {', '.join(str(s) for s in sources)}")
    return files


class FacePreparer:
    """Detector + landmark predictor + aligner for one process: ``preparer(path) -> face or reason``."""

    def __init__(self, options: PrepareOptions, threads: int = 1) -> None:
        from ..faces.detect import CenterFaceDetector
        from ..faces.landmarks import LandmarkPredictor

        self.options = options
        # No coarse pass: face photos are small, the main pass sees them at full size.
        self.detector = CenterFaceDetector(threshold=options.threshold, threads=threads, coarse_side=None)
        self.predictor = LandmarkPredictor()

    def __call__(self, path: Path) -> PreparedFace | str:
        from ..faces.align import align_face

        opts = self.options
        try:
            image = read_image(path)
        except UserError:
            return "unreadable"
        detections = self.detector(image)
        offset = 0
        if len(detections) == 0:
            # Second chance: a face cut by the photo border is found once it has room around it.
            offset = int(round(0.25 * max(image.shape[:2])))
            detections = self.detector(cv2.copyMakeBorder(image, *(offset,) * 4, cv2.BORDER_CONSTANT))
        if len(detections) == 0:
            return "no_face"
        sides = np.sqrt(np.prod(detections.boxes[:, 2:] - detections.boxes[:, :2], axis=1))
        best = int(np.argmax(sides))
        if sides[best] < opts.min_face:
            return "too_small"
        box = detections.boxes[best : best + 1] - offset
        keypoints = detections.keypoints[best : best + 1] - offset
        landmarks = self.predictor.predict(image, box, keypoints)[0]
        if not np.isfinite(landmarks).all():
            return "landmarks_failed"
        # The aligner replicates edge pixels where the crop reaches past a tight photo.
        aligned = align_face(image, landmarks, opts.size, 0)
        points = np.asarray(aligned.landmarks, np.float32)
        if not np.isfinite(points).all() or points.min() < 0 or points.max() > opts.size - 1:
            return "landmarks_outside_crop"
        # Face crops are tight: the aligned crop often reaches past the photo, where the aligner
        # replicates edge pixels. Measure how much of the face region is real.
        inside = cv2.warpAffine(
            np.ones(image.shape[:2], np.float32), aligned.matrix, (opts.size, opts.size), borderValue=0.0
        )
        coverage = float(inside[aligned.mask > 0].mean()) if (aligned.mask > 0).any() else 0.0
        if coverage < opts.min_coverage:
            return "low_coverage"
        ok, encoded = cv2.imencode(
            ".jpg",
            cv2.cvtColor(aligned.image, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, opts.quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1],
        )
        if not ok:
            return "encode_failed"
        return PreparedFace(str(path), encoded.tobytes(), points, coverage)


_WORKER: FacePreparer | None = None


def _init_worker(options: PrepareOptions) -> None:
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = FacePreparer(options, threads=1)


def _work(path: Path) -> PreparedFace | str:
    assert _WORKER is not None
    return _WORKER(path)


def process_images(
    files: Sequence[Path], options: PrepareOptions, workers: int = 1, progress: bool = False
) -> Iterable[PreparedFace | str]:
    """Prepare every file (in order), in ``workers`` processes."""
    from tqdm import tqdm

    bar = tqdm(total=len(files), disable=not progress, unit="img", dynamic_ncols=True)
    try:
        if workers <= 1:
            preparer = FacePreparer(options, threads=1)
            for path in files:
                yield preparer(path)
                bar.update(1)
            return
        # spawn: fork would copy onnxruntime/dlib state of the parent (and its threads).
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(options,)) as pool:
            for result in pool.imap(_work, files, chunksize=16):
                yield result
                bar.update(1)
    finally:
        bar.close()


def _write_shard(path: Path, faces: Sequence[PreparedFace], sources: Sequence[Path]) -> int:
    lengths = np.array([len(f.jpeg) for f in faces], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    jpeg = np.frombuffer(b"".join(f.jpeg for f in faces), np.uint8)
    landmarks = np.stack([f.landmarks for f in faces]).astype(np.float16)
    names = "\n".join(_relative_name(f.name, sources) for f in faces).encode("utf-8")
    tmp = path.with_name(path.name + ".partial.npz")
    coverage = np.array([f.coverage for f in faces], np.float16)
    np.savez(
        tmp, jpeg=jpeg, offsets=offsets, landmarks=landmarks, coverage=coverage, names=np.frombuffer(names, np.uint8)
    )
    os.replace(tmp, path)
    return path.stat().st_size


def _relative_name(name: str, sources: Sequence[Path]) -> str:
    """Source-relative file name (``utkface/1_0_0_x.jpg``): no machine paths in the data."""
    path = Path(name)
    for src in sources:
        root = src if src.is_dir() else src.parent
        try:
            return f"{root.name}/{path.relative_to(root).as_posix()}"
        except ValueError:
            continue
    return path.name


def prepare(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    limit: int | None = None,
    workers: int = 1,
    progress: bool = False,
    estimate_faces: int = 17_536,
) -> dict:
    """Build a training data directory from image folders; returns the written ``meta.json``.

    ``limit`` takes a seeded random subset of at most that many images per source (quick runs
    and size estimates). ``estimate_faces`` is the face count the size projection is made for.
    """
    options = options or PrepareOptions()
    if not 0.0 <= options.val_fraction < 1.0:
        raise UserError(f"validation fraction must be in [0, 1), got {options.val_fraction}")
    if not 1 <= options.quality <= 100:
        raise UserError(f"JPEG quality must be in 1..100, got {options.quality}")
    source_paths = [Path(s) for s in sources]
    files: list[Path] = []
    rng = np.random.default_rng(options.seed)
    for src in source_paths:
        found = list_images([src])
        if limit is not None and len(found) > limit:
            found = [found[i] for i in sorted(rng.choice(len(found), limit, replace=False))]
        files.extend(found)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "meta.json").exists():
        raise UserError(f"{out} already holds prepared data (meta.json); choose another --out or delete it")
    start = time.perf_counter()
    faces: list[PreparedFace] = []
    dropped: Counter[str] = Counter()
    for result in process_images(files, options, workers, progress):
        if isinstance(result, str):
            dropped[result] += 1
        else:
            faces.append(result)
    seconds = time.perf_counter() - start
    if not faces:
        raise UserError(f"no usable face in {len(files)} images (dropped: {dict(dropped)})")

    order = np.random.default_rng([options.seed, 1]).permutation(len(faces))
    n_val = int(round(options.val_fraction * len(faces)))
    if options.val_fraction > 0 and len(faces) >= 2:
        n_val = max(1, n_val)
    splits = {"val": [faces[i] for i in order[:n_val]], "train": [faces[i] for i in order[n_val:]]}
    shards: dict[str, list[str]] = {}
    total_bytes = 0
    for split, items in splits.items():
        shards[split] = []
        for k in range(0, len(items), SHARD_FACES):
            name = f"{split}-{k // SHARD_FACES:05d}.npz"
            total_bytes += _write_shard(out / name, items[k : k + SHARD_FACES], source_paths)
            shards[split].append(name)

    per_face = total_bytes / len(faces)
    meta = {
        "format": DATA_FORMAT,
        "version": DATA_VERSION,
        "resolution": options.size,
        "jpeg_quality": options.quality,
        "counts": {split: len(items) for split, items in splits.items()},
        "images": len(files),
        "dropped": dict(sorted(dropped.items())),
        "sources": [p.name for p in source_paths],
        "shards": shards,
        "bytes": total_bytes,
        "bytes_per_face": round(per_face, 1),
        "estimate": {"faces": estimate_faces, "mib": round(per_face * estimate_faces / 2**20, 2)},
        # Share of each face region that comes from the photo (the rest is replicated edge).
        "mask_coverage_percentiles": dict(
            zip(("10", "50", "90"), np.percentile([f.coverage for f in faces], [10, 50, 90]).round(3).tolist())
        ),
        "seconds": round(seconds, 1),
        "seed": options.seed,
        "mask": "streamanon.faces.align.face_mask (recomputed from landmarks at load time)",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta
