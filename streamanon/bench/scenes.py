"""Synthetic benchmark scenes: real face crops pasted on a plain background, written as a clip.

The faces are real photographs (UTKFace crops from the shared data by default), so the detector
has to find them like any face; the benchmark checks that it finds exactly the planted ones.
Each face drifts a few pixels from frame to frame so that tracking and smoothing do real work.
The plain background makes decode and encode cheaper than on camera footage: use the real clip
for those two stages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
BACKGROUND = 112  # plain mid grey
FPS = 25
DRIFT_PX = 3.0  # amplitude of each face's circular drift
DRIFT_PERIOD = 20  # frames per drift cycle
# UTKFace names start with age_gender_race_; adults are the typical faces of street footage.
_UTKFACE_NAME = re.compile(r"^(\d+)_\d_\d_")
_ADULT_AGES = range(20, 61)


@dataclass(frozen=True)
class SceneSpec:
    """One synthetic scene: frame size and number of planted faces."""

    width: int
    height: int
    faces: int

    @property
    def name(self) -> str:
        return f"synthetic {self.width}x{self.height}, {self.faces} face{'s' if self.faces != 1 else ''}"


@dataclass
class Scene:
    """A written synthetic clip and where each face is in each frame."""

    spec: SceneSpec
    clip: Path
    face_size: int  # side of each pasted square crop, pixels
    boxes: np.ndarray  # (frames, faces, 4) float32, x1 y1 x2 y2 of each pasted crop
    sources: list[str]  # file names of the crops used


def list_face_crops(folder: Path) -> list[Path]:
    """Candidate face crops of ``folder``, sorted; for UTKFace only adults (20-60)."""
    if not folder.is_dir():
        raise UserError(f"face crop folder not found: {folder} (pass --faces-dir DIR or --no-synthetic)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    adults = [p for p in files if (m := _UTKFACE_NAME.match(p.name)) and int(m.group(1)) in _ADULT_AGES]
    files = adults or files
    if not files:
        raise UserError(f"no face images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def pick_crops(folder: Path, count: int) -> list[Path]:
    """``count`` crops spread evenly over the sorted candidates (deterministic, varied)."""
    files = list_face_crops(folder)
    if len(files) < count:
        raise UserError(f"{folder} has {len(files)} usable face images; {count} are needed")
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"cannot read face image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def grid(count: int, width: int, height: int) -> tuple[int, int]:
    """(rows, cols) of a grid of ``count`` cells that are about square in a ``width`` x ``height`` frame."""
    rows = max(1, min(count, round(math.sqrt(count * height / width))))
    return rows, math.ceil(count / rows)


def face_side(spec: SceneSpec) -> int:
    """Crop side: a quarter of the frame height (the same face size for every face count), less
    when the grid cells are small; even, so that every size is exact in 4:2:0 video."""
    rows, cols = grid(spec.faces, spec.width, spec.height)
    side = min(spec.height / 4, 0.7 * min(spec.width / cols, spec.height / rows))
    return max(16, int(side) // 2 * 2)


def planted_boxes(spec: SceneSpec, frames: int) -> np.ndarray:
    """(frames, faces, 4) crop boxes: grid cell centres plus a small circular drift per face."""
    rows, cols = grid(spec.faces, spec.width, spec.height)
    side = face_side(spec)
    cell_w, cell_h = spec.width / cols, spec.height / rows
    boxes = np.zeros((frames, spec.faces, 4), np.float32)
    for k in range(spec.faces):
        r, c = divmod(k, cols)
        cx, cy = (c + 0.5) * cell_w, (r + 0.5) * cell_h
        phase = 2 * math.pi * k / spec.faces
        for i in range(frames):
            angle = 2 * math.pi * i / DRIFT_PERIOD + phase
            x1 = int(round(cx - side / 2 + DRIFT_PX * math.cos(angle)))
            y1 = int(round(cy - side / 2 + DRIFT_PX * math.sin(angle)))
            x1 = min(max(0, x1), spec.width - side)
            y1 = min(max(0, y1), spec.height - side)
            boxes[i, k] = (x1, y1, x1 + side, y1 + side)
    return boxes


def render_frames(spec: SceneSpec, crops: list[np.ndarray], boxes: np.ndarray) -> list[np.ndarray]:
    """The scene's RGB frames: plain background with each crop pasted at its box."""
    side = face_side(spec)
    resized = [cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA if c.shape[0] > side else cv2.INTER_LINEAR)
               for c in crops]
    frames = []
    for frame_boxes in boxes:
        image = np.full((spec.height, spec.width, 3), BACKGROUND, np.uint8)
        for crop, (x1, y1, _, _) in zip(resized, frame_boxes.astype(int)):
            image[y1 : y1 + side, x1 : x1 + side] = crop
        frames.append(image)
    return frames


def write_clip(
    path: Path, frames: list[np.ndarray], fps: Fraction | int = FPS, crf: int = 18, preset: str = "veryfast"
) -> Path:
    """Encode RGB ``frames`` as an H.264 clip (the benchmark then decodes it like any input)."""
    height, width = frames[0].shape[:2]
    fps = Fraction(fps)
    import av  # here, not at the top: the grid helpers also serve GPU machines without PyAV

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = 1 / fps
        stream.codec_context.options = {"crf": str(crf), "preset": preset}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def build_scene(spec: SceneSpec, faces_dir: Path, frames: int, folder: Path) -> Scene:
    """Render ``frames`` frames of ``spec`` with crops from ``faces_dir`` into a clip in ``folder``."""
    if spec.width % 2 or spec.height % 2:
        raise UserError(f"scene size {spec.width}x{spec.height}: width and height must be even")
    sources = pick_crops(faces_dir, spec.faces)
    boxes = planted_boxes(spec, frames)
    images = render_frames(spec, [_read_rgb(p) for p in sources], boxes)
    clip = write_clip(folder / f"scene_{spec.width}x{spec.height}_{spec.faces}.mp4", images)
    return Scene(spec, clip, face_side(spec), boxes, [p.name for p in sources])


def count_found(planted: np.ndarray, detected: list[np.ndarray]) -> int:
    """Planted boxes (N, 4) that contain the centre of at least one detected box."""
    if not detected:
        return 0
    centres = np.stack([(d[:2] + d[2:]) / 2 for d in detected])
    inside = (
        (centres[None, :, 0] >= planted[:, None, 0]) & (centres[None, :, 0] <= planted[:, None, 2])
        & (centres[None, :, 1] >= planted[:, None, 1]) & (centres[None, :, 1] <= planted[:, None, 3])
    )
    return int(inside.any(axis=1).sum())


def trim_clip(src: Path, frames: int | None, dst: Path) -> tuple[Path, int]:
    """The first ``frames`` frames of ``src`` re-encoded into ``dst``, or ``src`` itself when
    ``frames`` is None or the clip is not longer; returns the clip to use and its frame count."""
    from ..io.video import VideoReader

    images, count = [], 0
    with VideoReader(src) as reader:
        fps = reader.fps or Fraction(FPS)
        for frame in reader:
            count += 1
            if frames is not None:
                images.append(frame.image)
                if count > frames:
                    break
    if frames is None or count <= frames:
        return src, count
    return write_clip(dst, images[:frames], fps), frames
