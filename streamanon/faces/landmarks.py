"""dlib 68-point landmarks from CenterFace detections.

dlib's shape predictor (``shape_predictor_68_face_landmarks.dat``, iBUG 300-W) was trained
on the boxes of dlib's HOG detector: square, upright, from the eyebrows to just below the
lips. CenterFace boxes are taller (forehead to chin), not square, and the predictor's
cascade copes poorly with in-plane rotation. So each detection is converted to the
square, rotated "predictor frame" that the cascade expects:

* with CenterFace's five keypoints (``conversion="keypoints"``, used whenever keypoints
  are given): centre ``(eyes + mouth) / 2 + KP_SHIFT * (mouth - eyes)``, side
  ``KP_SCALE * sqrt(w * h)`` of the box, rotated so that the eyes are level;
* from the box alone (``conversion="box"``, e.g. for a coasting track): an upright square
  of side ``BOX_SCALE * sqrt(w * h)`` centred ``BOX_SHIFT_Y * h`` below the box centre.

The face is warped into a crop where that square is ``WORK_SIZE`` pixels wide (dlib only
takes integer rectangles and returns integer points; at a fixed zoom the points come
back with sub-pixel precision and small faces are handled like large ones).

Calibration, ``python benchmarks/calibrate_landmarks.py``: CenterFace detection matched
to each 300-W ground-truth face; NME = mean point error / outer-eye-corner distance, mean
over faces, and the share of faces with NME > 0.1. Grids (box: scale 0.85-1.05 x shift
0-0.08; keypoints: scale 0.8-1.0 x shift -0.2-0) pick the best mean of the two sets'
means; dlib 20.0.1, onnxruntime 1.32:

    =======================================  =================  ==================
    conversion                               HELEN (330 faces)  AFW (337 faces)
    =======================================  =================  ==================
    none: CenterFace box as the dlib rect    0.0429  fail 5.8%  0.0855  fail 18.7%
    box: upright square 1.00, shift 0.00     0.0309  fail 2.1%  0.0671  fail 11.6%
    box: calibrated (BOX_*: 0.95, 0.00)      0.0300  fail 2.4%  0.0671  fail 11.3%
    keypoints: calibrated (KP_*: 0.9, -0.1)  0.0258  fail 0.0%  0.0388  fail 1.5%
    =======================================  =================  ==================

The keypoint conversion (level eyes, centre from eyes and mouth) matters most on the
in-the-wild AFW faces; squaring the box is most of the gain of the box-only conversion.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import UserError
from ..models import resolve_model
from .align import points_to_frame, warp_image
from .detect import as_rgb_uint8, box_iou

if TYPE_CHECKING:
    from ..config import LandmarksConfig

log = logging.getLogger(__name__)

# Keypoint conversion (the default when CenterFace keypoints are available).
KP_SCALE = 0.9  # square side / sqrt(box area)
KP_SHIFT = -0.1  # centre shift along eyes -> mouth, in units of that distance
# Box-only conversion (fallback without keypoints).
BOX_SCALE = 0.95
BOX_SHIFT_Y = 0.0  # centre shift down, in box heights
WORK_SIZE = 160  # predictor square side in the working crop (dlib's training faces: ~80-250 px)

# A face whose 68 points' bounding box overlaps its detection box less than this is taken as a
# landmark failure: on 730 HELEN/AFW detections the smallest overlap was 0.24 (5th percentile
# 0.54). A face generated there would be pasted beside the real one, so it is hidden instead.
MIN_LANDMARK_BOX_IOU = 0.15

RIGHT_EYE_OUTER = 36  # subject's right eye, outer corner (image left for a frontal face)
LEFT_EYE_OUTER = 45

Conversion = Literal["auto", "keypoints", "box", "none"]


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """Read an iBUG ``.pts`` landmark file -> (N, 2) float32 in 0-based pixel coordinates.

    300-W annotations are 1-based (MATLAB convention); one pixel is subtracted.
    """
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except FileNotFoundError:
        raise UserError(f"landmark file not found: {path}") from None
    try:
        start = lines.index("{") + 1
        end = lines.index("}", start)
        points = np.array([[float(v) for v in line.split()] for line in lines[start:end] if line], np.float32)
    except ValueError:
        raise UserError(f"not a valid .pts landmark file: {path}") from None
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise UserError(f"not a valid .pts landmark file: {path}")
    return points - 1.0


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    """Outer-eye-corner distance (points 36 and 45) of (68, 2) or (N, 68, 2) landmarks."""
    landmarks = np.asarray(landmarks, np.float32)
    return np.linalg.norm(landmarks[..., LEFT_EYE_OUTER, :] - landmarks[..., RIGHT_EYE_OUTER, :], axis=-1)


def nme(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Normalised mean error: mean point distance / inter-ocular distance of ``truth``."""
    predicted = np.asarray(predicted, np.float32)
    truth = np.asarray(truth, np.float32)
    return np.linalg.norm(predicted - truth, axis=-1).mean(axis=-1) / np.maximum(inter_ocular(truth), 1e-6)


def landmarks_fit_boxes(points: np.ndarray, boxes: np.ndarray, min_iou: float = MIN_LANDMARK_BOX_IOU) -> np.ndarray:
    """(N,) bool: whether each face's landmarks (N, 68, 2) are finite and their bounding box
    overlaps its detection box (N, 4) by at least ``min_iou``."""
    points = np.asarray(points, np.float32).reshape(len(boxes), -1, 2)
    finite = np.isfinite(points).all(axis=(1, 2))
    extents = np.concatenate([np.nan_to_num(points).min(axis=1), np.nan_to_num(points).max(axis=1)], axis=1)
    overlap = np.diagonal(box_iou(boxes, extents))  # face i's box against its own points
    return finite & (overlap >= min_iou)


def predictor_frames(
    boxes: np.ndarray,
    keypoints: np.ndarray | None = None,
    kp_scale: float = KP_SCALE,
    kp_shift: float = KP_SHIFT,
    box_scale: float = BOX_SCALE,
    box_shift_y: float = BOX_SHIFT_Y,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Square predictor frames for CenterFace detections: centres (N, 2), sides (N,), angles (N,).

    Rows of ``keypoints`` (N, 5, 2) that are missing (None) or contain NaN fall back to
    the box-only conversion. Angles are in radians (the eye line's slope in the image).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    root = np.sqrt(np.clip(w * h, 0, None))
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2 + box_shift_y * h], axis=1)
    sides = box_scale * root
    angles = np.zeros(len(boxes))
    if keypoints is not None:
        kps = np.asarray(keypoints, np.float64).reshape(-1, 5, 2)
        if len(kps) != len(boxes):
            raise UserError(f"got {len(kps)} keypoint sets for {len(boxes)} boxes")
        eyes = kps[:, :2].mean(axis=1)
        mouth = kps[:, 3:].mean(axis=1)
        eye_vec = kps[:, 1] - kps[:, 0]  # CenterFace order: image-left eye first
        # Keypoints of a sane detection lie around the box; garbage ones keep the box fallback.
        ok = np.isfinite(kps).all(axis=(1, 2)) & (np.linalg.norm(eye_vec, axis=1) > 0.05 * root)
        centres[ok] = ((eyes + mouth) / 2 + kp_shift * (mouth - eyes))[ok]
        sides[ok] = kp_scale * root[ok]
        angles[ok] = np.arctan2(eye_vec[ok, 1], eye_vec[ok, 0])
    return centres, sides, angles


class LandmarkPredictor:
    """dlib's 68-point shape predictor fed with converted CenterFace detections.

    Args:
        model_path: explicit ``shape_predictor_68_face_landmarks.dat``; default from the
            model registry.
        conversion: ``"auto"`` (keypoints when given, else box), ``"keypoints"``, ``"box"``,
            or ``"none"`` (the raw box handed to dlib on the frame: for benchmarks only).
        work_size: side of the predictor square in the working crop, pixels.
        kp_scale, kp_shift, box_scale, box_shift_y: the conversion constants.
        backend: ``"dlib"`` (dlib's C++, one face at a time) or ``"torch"`` (the same trees in
            PyTorch, all faces of a call at once, see ``shape_predictor_torch``; the points are
            rounded as dlib rounds them, so both give the same landmarks).
        device: where the torch backend runs.
        cuda_graphs: on CUDA, replay the predictor on an uploaded frame (``predict(frame=)``) as
            CUDA graphs, one per face count; a failure switches them off for the run.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        conversion: Conversion = "auto",
        work_size: int = WORK_SIZE,
        kp_scale: float = KP_SCALE,
        kp_shift: float = KP_SHIFT,
        box_scale: float = BOX_SCALE,
        box_shift_y: float = BOX_SHIFT_Y,
        backend: Literal["dlib", "torch"] = "dlib",
        device: str = "cpu",
        cuda_graphs: bool = True,
    ) -> None:
        if conversion not in ("auto", "keypoints", "box", "none"):
            raise UserError(f"unknown landmark box conversion '{conversion}'")
        if backend not in ("dlib", "torch"):
            raise UserError(f"landmark backend must be dlib or torch, got {backend!r}")
        self.model_path = resolve_model("dlib_landmarks68", model_path)
        self.backend = backend
        if backend == "dlib":
            self._load_dlib()
        else:
            import torch

            from .shape_predictor_torch import FrameGraphs, TorchShapePredictor

            self.device = torch.device(device)
            self._torch_predictor = TorchShapePredictor.from_dlib_file(self.model_path).to(self.device)
            # On CUDA the frame path runs as CUDA graphs (~1000 small kernels a frame otherwise).
            self._frame_graphs = None
            if self.device.type == "cuda" and cuda_graphs:
                self._frame_graphs = FrameGraphs(self._torch_predictor, 2 * int(work_size))
        self.conversion = conversion
        self.work_size = int(work_size)
        self.params = dict(kp_scale=kp_scale, kp_shift=kp_shift, box_scale=box_scale, box_shift_y=box_shift_y)

    def _load_dlib(self) -> None:
        import dlib

        self._dlib = dlib
        self._dlib_predictor = dlib.shape_predictor(str(self.model_path))

    @classmethod
    def from_config(cls, config: "LandmarksConfig", device: str = "cpu") -> "LandmarkPredictor":
        """Build from the ``[landmarks]`` section: ``auto`` is torch on a GPU, dlib otherwise."""
        backend = config.backend
        if backend == "auto":
            backend = "dlib" if str(device).startswith("cpu") else "torch"
        return cls(backend=backend, device=device)

    @property
    def where(self) -> str:
        """Who runs the predictor, for run summaries: ``dlib`` or ``torch on <device>``."""
        return "dlib" if self.backend == "dlib" else f"torch on {self.device}"

    def predict(self, image_rgb: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray | None = None,
                frame=None) -> np.ndarray:  # fmt: skip
        """Landmarks (N, 68, 2) float32 in dlib/iBUG order.

        Args:
            image_rgb: (H, W, 3) uint8 RGB frame.
            boxes: (N, 4) CenterFace boxes x1 y1 x2 y2 (frame pixels).
            keypoints: optional (N, 5, 2) CenterFace keypoints; they make the prediction
                markedly better on tilted and turned faces (see the module docstring).
            frame: optionally the same frame as an (H, W, 3) uint8 tensor already on the torch
                backend's device (the pipeline's upload). The crops are then not cut on the host
                but sampled there where the trees look (``FramePixels``): the same accuracy on
                300-W, points ~0.5 % of the eye distance from the host path's.
        """
        image = as_rgb_uint8(image_rgb)
        boxes = _checked_boxes(boxes)
        return self._predict([image] * len(boxes), boxes, keypoints, frame)

    def predict_each(self, images: list[np.ndarray], boxes: np.ndarray,
                     keypoints: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """Landmarks (N, 68, 2) of one face in each of N images (``boxes[i]``, ``keypoints[i]``
        in ``images[i]``; a NaN keypoint row means the box alone), in one predictor call: the
        torch backend runs them as one batch, dlib one after another."""
        boxes = _checked_boxes(boxes)
        if len(images) != len(boxes):
            raise UserError(f"got {len(images)} images for {len(boxes)} face boxes")
        return self._predict([as_rgb_uint8(image) for image in images], boxes, keypoints, None)

    def _predict(self, images: list[np.ndarray], boxes: np.ndarray, keypoints: np.ndarray | None,
                 frame) -> np.ndarray:  # fmt: skip
        """``boxes[i]`` in ``images[i]``; ``frame``: all images are this one, on the device."""
        if not len(boxes):
            return np.zeros((0, 68, 2), np.float32)
        if self.conversion == "none":
            rects = np.array([[round(v) for v in box] for box in boxes], np.int64)
            return self._run(images, rects)
        if self.conversion == "box":
            keypoints = None
        elif self.conversion == "keypoints" and keypoints is None:
            raise UserError("landmark conversion 'keypoints' needs the detector's keypoints")
        centres, sides, angles = predictor_frames(boxes, keypoints, **self.params)
        to_crops = [self._to_crop(centres[i], max(float(sides[i]), 1.0), float(angles[i])) for i in range(len(boxes))]
        half = self.work_size // 2
        square = np.array([[half, half, half + self.work_size, half + self.work_size]] * len(to_crops), np.int64)
        points = self._run_on_frame(frame, to_crops, square) if self._reads_frame(frame) else None
        if points is None:
            crops = [warp_image(image, to_crop, 2 * self.work_size) for image, to_crop in zip(images, to_crops)]
            points = self._run(crops, square)
        return np.stack([points_to_frame(p, m) for p, m in zip(points, to_crops)]).astype(np.float32)

    def _to_crop(self, centre: np.ndarray, side: float, angle: float) -> np.ndarray:
        """Frame -> crop (2, 3): rotate by -angle about the centre, zoom the predictor square to
        ``work_size``, centre it in a crop twice that size (the shape may leave the square)."""
        size = self.work_size
        zoom = size / side
        cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
        to_crop = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
        to_crop[:, 2] = size - to_crop[:, :2] @ centre
        return to_crop

    def _run(self, images: list[np.ndarray], rects: np.ndarray) -> np.ndarray:
        """The predictor's points (N, 68, 2) on ``images[i]`` in ``rects[i]`` (dlib's inclusive
        left, top, right, bottom), as whole pixels like dlib's."""
        if self.backend == "torch":
            try:
                return self._run_torch(images, rects)
            except RuntimeError:
                self._fall_back_to_dlib()
        return np.stack(
            [_parts(self._dlib_predictor(img, self._dlib.rectangle(*map(int, r)))) for img, r in zip(images, rects)]
        )

    def _reads_frame(self, frame) -> bool:
        """Whether ``frame`` is a tensor the torch backend can sample its crops from."""
        return (
            frame is not None and self.backend == "torch"
            and getattr(frame, "device", None) == self._torch_predictor.initial_shape.device
        )  # fmt: skip

    def _run_on_frame(self, frame, to_crops: list[np.ndarray], rects: np.ndarray) -> np.ndarray | None:
        """Crop-pixel points (N, 68, 2) with the crops sampled on ``frame``'s device (replayed as
        CUDA graphs there); None (after handing over to dlib) when the torch backend fails."""
        import cv2

        from ..gpu import upload

        to_frame = upload(np.stack([cv2.invertAffineTransform(m) for m in to_crops]), frame.device)
        rects = upload(rects, frame.device)
        try:
            return _whole_pixels(self._frame_points(frame, to_frame, rects))
        except RuntimeError:
            self._fall_back_to_dlib()
            return None

    def _frame_points(self, frame, to_frame, rects):
        """The torch predictor's unrounded points on crops sampled from ``frame``: replayed as CUDA
        graphs where there are some; if those fail, the same work without them from then on."""
        from .shape_predictor_torch import FramePixels

        if self._frame_graphs is not None:
            try:
                return self._frame_graphs(frame, to_frame, rects)
            except RuntimeError:  # capture or replay
                log.warning("CUDA graphs of the landmark predictor failed; it runs without them", exc_info=True)
                self._frame_graphs = None
        return self._torch_predictor.run(FramePixels(frame, to_frame, 2 * self.work_size), rects)

    def _fall_back_to_dlib(self) -> None:
        # e.g. a CUDA error: dlib gives the same points, only slower, rather than every face blurred
        log.warning("the PyTorch landmark predictor failed on %s; dlib runs it from now on", self.device, exc_info=True)
        self._load_dlib()
        self.backend = "dlib"  # after the load: another thread may be in this predictor

    def _run_torch(self, images: list[np.ndarray], rects: np.ndarray) -> np.ndarray:
        from ..gpu import upload
        from .shape_predictor_torch import dlib_grey

        if all(img is images[0] for img in images):  # one frame, several boxes: read it once
            frame = dlib_grey(upload(images[0], self.device))
            batch = frame[None].expand(len(images), *frame.shape)
        else:
            batch = upload(np.stack(images), self.device)
        return _whole_pixels(self._torch_predictor(batch, upload(rects, self.device)))


def _checked_boxes(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` as (N, 4) float32; a one-line error for any other shape or a non-finite value."""
    boxes = np.asarray(boxes, np.float32)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float32)
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise UserError(f"expected face boxes of shape (N, 4), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise UserError("face boxes contain NaN or infinite values")
    return boxes


def _whole_pixels(points) -> np.ndarray:
    """The torch predictor's points rounded as dlib rounds its own, as a host array."""
    return (points + 0.5).floor().cpu().numpy()


def _parts(shape) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


class NearestFaceLandmarks:
    """The landmarks an observer would find for one face in several images of it: CenterFace on
    each image (same-size images share one network run), the detection nearest a reference
    face's centre, and the 68 points of ``predictor`` on it; without a detection, the predictor
    placed in the reference landmarks' bounding box. ``streamanon train validate`` judges the
    shown faces this way, and the identity guard can measure its candidates the same way.

    Args:
        detector: a ``CenterFaceDetector`` (anything with ``detect_batch(images) -> [Detections]``).
        predictor: a :class:`LandmarkPredictor`.
        detect_side: images whose longer side exceeds this are detected at that size (the
            predictor still sees them whole): CenterFace on a 512 px region of a frame costs
            ~55 ms on 2 CPU cores, ~5 ms at 160 px. ``None``: at their own size.
    """

    def __init__(self, detector, predictor: LandmarkPredictor, detect_side: int | None = None) -> None:
        if detect_side is not None and detect_side < 32:
            raise UserError(f"detect_side must be at least 32 pixels, got {detect_side}")
        self.detector = detector
        self.predictor = predictor
        self.detect_side = detect_side

    def __call__(self, images: list[np.ndarray], near: np.ndarray) -> np.ndarray:
        """(N, 68, 2) float32 landmarks of the face nearest ``near``'s centre ((68, 2) landmarks in
        the images' pixels) in each of ``images``."""
        near = np.asarray(near, np.float32)
        centre = near.mean(axis=0)
        # Without a detection, the predictor is placed in the reference's box (harder for it).
        boxes = np.tile(np.concatenate([near.min(axis=0), near.max(axis=0)]), (len(images), 1))
        keypoints = np.full((len(images), 5, 2), np.nan, np.float32)
        for i, found in enumerate(self._detect(images)):
            if len(found):
                centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
                k = int(np.argmin(np.linalg.norm(centres - centre, axis=1)))
                boxes[i], keypoints[i] = found.boxes[k], found.keypoints[k]
        return self.predictor.predict_each(images, boxes, keypoints)

    def _detect(self, images: list[np.ndarray]) -> list:
        """The detector's faces in each image (frame pixels), at most ``detect_side`` px a side."""
        side = max(max(image.shape[:2]) for image in images) if images else 0
        if self.detect_side is None or side <= self.detect_side:
            return self.detector.detect_batch(images)
        import cv2

        scales, small = [], []
        for image in images:
            scale = min(1.0, self.detect_side / max(image.shape[:2]))
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            small.append(image if scale == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            scales.append(np.array([image.shape[1] / size[0], image.shape[0] / size[1]], np.float32))
        found = self.detector.detect_batch(small)
        return [
            replace(f, boxes=f.boxes * np.tile(back, 2), keypoints=f.keypoints * back) for f, back in zip(found, scales)
        ]
