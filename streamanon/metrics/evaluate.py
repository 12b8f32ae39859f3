"""Evaluate an anonymized clip (or image folder) against its original, face by face.

Faces are found **in the original** (CenterFace + dlib landmarks, tracked over frames),
and the same regions are measured in the anonymized frame:

- the anonymized face's embedding is computed at the *original's* landmarks;
- landmarks are re-predicted on the anonymized frame (pose and expression NME), placed at
  the anonymized frame's own matching detection, or at the original's when there is none;
- detection in the anonymized frame (CenterFace and dlib HOG) counts when a detection
  matches the original box (see :func:`matches_box`);
- crops for the photometric metrics use one transform from the original's landmarks.

Only faces *detected* in the original frame are evaluated (a coasting track has no
original face to compare with). Results are plain dicts (see :mod:`.report` for the
schema); per-face records keep NaN for "not computed", summaries turn it into null.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import ModelUnavailable, UserError
from . import color, detail, identity, landmarks as lmk, lighting, regions, temporal
from .fid import fid_between, find_inception_weights, frechet_distance_features
from .stats import finite_or_none, group_by, summarize, summarize_records

log = logging.getLogger(__name__)

FACE_METRICS = (
    "detected_ours",
    "detected_hog",
    "detected_hog_original",
    "cosine",
    "distance",
    "reid",
    "pose_nme",
    "expression_nme",
    "emotion_agree",
    "si_mse",
    "si_l2_shading",
    "delta_L",
    "delta_C",
    "delta_E",
    "detail_ratio",
    "noise_ratio",
)
THUMB_SIZE = 96
HOG_UPSAMPLE_MAX_SIDE = 1000  # frames up to this long side get HOG with one 2x upsampling
MAX_FID_FACES = 2000  # face crop pairs kept for FID (a uniform sample of a longer clip)


@dataclass(frozen=True)
class EvalOptions:
    """What to measure and with which models."""

    detect_threshold: float = 0.4
    # Angles the original's frames are also searched at (``detect.rotations``): faces at any roll.
    detect_rotations: tuple[int, ...] = (0,)
    max_frames: int | None = None  # evaluate only the first N frames
    # Folders of video frames (``streamanon file --sequence``): each folder's images, in natural name
    # order, are one camera's frames at this rate, tracked and measured over time like a video.
    sequence_fps: float | None = None
    hog: bool = True  # dlib HOG detection rate (slow on large frames)
    emotion_weights: str | None = None  # None = the shipped checkpoint
    emotion: bool = True
    inception_weights: str | None = None  # None = $STREAMANON_MODELS / torch hub cache
    worst: int = 4  # thumbnails per criterion (re-id distance, pose NME) in the HTML report
    label: str = "anonymized"


@dataclass
class FramePair:
    """One original frame and its anonymized counterpart."""

    index: int
    time: float
    original: np.ndarray
    anonymized: np.ndarray
    name: str = ""
    sequence: int = 0  # which folder of a frame sequence (tracking starts anew in each)


# ------------------------------------------------------------------------------------------
# inputs


def iter_pairs(original: str | os.PathLike, anonymized: str | os.PathLike, max_frames: int | None = None,
               sequence_fps: float | None = None) -> tuple[str, Iterator[FramePair]]:  # fmt: skip
    """``(kind, pairs)``: frames of two videos in lockstep, same-named images of two folders,
    or two single images. With ``sequence_fps``, two folders of video frames: kind ``video``.

    Raises :class:`UserError` when the inputs are of different kinds, are missing, or do
    not match (frame sizes, frame counts, file names).
    """
    original, anonymized = Path(original), Path(anonymized)
    for p in (original, anonymized):
        if not p.exists():
            raise UserError(f"input not found: {p}")
    if original.is_dir() != anonymized.is_dir():
        raise UserError("compare a video with a video, or an image folder with an image folder")
    if original.is_dir():
        if sequence_fps is not None:
            return "video", _sequence_pairs(original, anonymized, max_frames, sequence_fps)
        return "images", _folder_pairs(original, anonymized, max_frames)
    if sequence_fps is not None:
        raise UserError("--sequence compares two folders of video frames")
    from ..io.images import is_image_path, read_image

    if is_image_path(original) != is_image_path(anonymized):
        image, other = (original, anonymized) if is_image_path(original) else (anonymized, original)
        raise UserError(f"{image.name} is an image and {other.name} is not: compare an image with an image, "
                        "or a video with a video")  # fmt: skip
    if is_image_path(original):
        pair = FramePair(0, 0.0, read_image(original), read_image(anonymized), original.name)
        _check_same_size(pair)
        return "images", iter([pair])
    return "video", _video_pairs(original, anonymized, max_frames)


def _check_same_size(pair: FramePair) -> None:
    if pair.original.shape != pair.anonymized.shape:
        raise UserError(
            f"frame {pair.index}{' (' + pair.name + ')' if pair.name else ''}: original is "
            f"{pair.original.shape[1]}x{pair.original.shape[0]}, anonymized "
            f"{pair.anonymized.shape[1]}x{pair.anonymized.shape[0]}"
        )


def _video_pairs(original: Path, anonymized: Path, max_frames: int | None) -> Iterator[FramePair]:
    from ..io.video import VideoReader

    with VideoReader(original) as r_orig, VideoReader(anonymized) as r_anon:
        fps = float(r_orig.fps) if r_orig.fps else 25.0
        frames_o, frames_a = iter(r_orig), iter(r_anon)
        for i in itertools.count():
            if max_frames is not None and i >= max_frames:
                return
            fo, fa = next(frames_o, None), next(frames_a, None)
            if fo is None and fa is None:
                return
            if fo is None or fa is None:
                longer = "anonymized" if fo is None else "original"
                raise UserError(f"frame counts differ: the {longer} clip has more than {i} frames")
            t = fo.time if fo.time is not None else i / fps
            pair = FramePair(i, float(t), fo.image, fa.image)
            _check_same_size(pair)
            yield pair


def _folder_pairs(original: Path, anonymized: Path, max_frames: int | None) -> Iterator[FramePair]:
    from ..io.images import iter_image_folder, read_image

    names_o = [rel for rel, _ in iter_image_folder(original)]
    _check_counterparts(names_o, original, anonymized)
    for i, rel in enumerate(names_o):
        if max_frames is not None and i >= max_frames:
            return
        pair = FramePair(i, float(i), read_image(original / rel), read_image(anonymized / rel), str(rel))
        _check_same_size(pair)
        yield pair


def _check_counterparts(names: list[Path], original: Path, anonymized: Path) -> None:
    """:class:`UserError` when ``original`` has no images (``names``, relative to it) or one of them
    has no same-named image in ``anonymized``."""
    from ..io.images import iter_image_folder

    if not names:
        raise UserError(f"no images in {original}")
    present = {rel for rel, _ in iter_image_folder(anonymized)}
    missing = [str(n) for n in names if n not in present]
    if missing:
        raise UserError(f"{len(missing)} image(s) of {original} have no counterpart in {anonymized}, e.g. {missing[0]}")


def _sequence_pairs(original: Path, anonymized: Path, max_frames: int | None, fps: float) -> Iterator[FramePair]:
    """Same-named images of two folders as frame sequences (``streamanon.io.images.image_sequences``):
    per folder in natural name order, timed at ``fps``."""
    from ..io.images import image_sequences, read_image

    runs = image_sequences(original)
    _check_counterparts([rel for run in runs for rel, _ in run], original, anonymized)
    index = 0
    for sequence, run in enumerate(runs):
        for frame, (rel, path) in enumerate(run):
            if max_frames is not None and index >= max_frames:
                return
            pair = FramePair(index, frame / fps, read_image(path), read_image(anonymized / rel), str(rel), sequence)
            _check_same_size(pair)
            yield pair
            index += 1


# ------------------------------------------------------------------------------------------
# models


def matching_index(candidates: np.ndarray, box: np.ndarray) -> int | None:
    """Index of the candidate box whose centre and ``box``'s centre lie in each other
    (the nearest such centre when several do), or None.

    Detectors disagree on box conventions (CenterFace includes the forehead, HOG is
    tighter), so mutual centre containment is used instead of an IoU threshold.
    """
    candidates = np.asarray(candidates, np.float64).reshape(-1, 4)
    if not len(candidates):
        return None
    b = np.asarray(box, np.float64)
    bc = (b[:2] + b[2:]) / 2
    cc = (candidates[:, :2] + candidates[:, 2:]) / 2
    inside_b = (cc >= b[:2]).all(1) & (cc <= b[2:]).all(1)
    inside_c = (bc >= candidates[:, :2]).all(1) & (bc <= candidates[:, 2:]).all(1)
    both = np.flatnonzero(inside_b & inside_c)
    if not len(both):
        return None
    return int(both[np.argmin(np.linalg.norm(cc[both] - bc, axis=1))])


def matches_box(candidates: np.ndarray, box: np.ndarray) -> bool:
    """True when some candidate box matches ``box`` (see :func:`matching_index`)."""
    return matching_index(candidates, box) is not None


@dataclass
class Models:
    """The networks the evaluation uses; built once and shared by baseline runs."""

    detector: Callable
    landmarks: object
    embedder: object
    hog: object | None  # (upsampling HOG for small frames, plain HOG for large ones)
    emotion: object | None
    notes: list[str] = field(default_factory=list)

    def hog_boxes(self, image: np.ndarray) -> np.ndarray | None:
        """dlib HOG boxes (N, 4) in ``image``, or None when HOG is off.

        HOG finds faces down to ~80 px as is, ~40 px after one 2x upsampling; upsampling a
        large frame costs seconds per frame, so only frames up to HOG_UPSAMPLE_MAX_SIDE get it.
        """
        if self.hog is None:
            return None
        small_frame_hog, large_frame_hog = self.hog
        detector = small_frame_hog if max(image.shape[:2]) <= HOG_UPSAMPLE_MAX_SIDE else large_frame_hog
        return np.asarray(detector(image), np.float64).reshape(-1, 4)

    @classmethod
    def load(cls, options: EvalOptions) -> "Models":
        from ..faces.detect import CenterFaceDetector
        from ..faces.embed import DlibHogDetector, default_embedder
        from ..faces.landmarks import LandmarkPredictor

        notes: list[str] = []
        emotion = None
        if options.emotion:
            try:
                from .emotion import EmotionClassifier

                emotion = EmotionClassifier(options.emotion_weights)
            except ImportError as exc:  # torch is an optional extra
                notes.append(f"emotion agreement unavailable: {exc} (pip install 'streamanon[generate]')")
            except ModelUnavailable as exc:
                if options.emotion_weights is not None:
                    raise
                notes.append(f"emotion agreement unavailable: {exc}")
        return cls(
            detector=CenterFaceDetector(threshold=options.detect_threshold, rotations=options.detect_rotations),
            landmarks=LandmarkPredictor(),
            embedder=default_embedder(),
            hog=(DlibHogDetector(upsample=1), DlibHogDetector(upsample=0)) if options.hog else None,
            emotion=emotion,
            notes=notes,
        )


# ------------------------------------------------------------------------------------------
# per-frame evaluation


@dataclass
class _TrackState:
    frame: int
    anon_embedding: np.ndarray
    orig_landmarks: np.ndarray
    anon_landmarks: np.ndarray


class ClipEvaluator:
    """Accumulates per-face records over frame pairs; :meth:`result` builds the ClipReport."""

    def __init__(self, models: Models, options: EvalOptions, kind: str) -> None:
        from ..config import SmoothConfig, TrackConfig
        from ..faces.track import FaceTracker

        self.models = models
        self.options = options
        self.kind = kind
        # Smoothing off: the metrics need this frame's own detection, not a filtered one.
        self.tracker = FaceTracker(TrackConfig(), SmoothConfig(enabled=False))
        self.records: list[dict] = []
        self.orig_embeddings: list[np.ndarray] = []
        self.anon_embeddings: list[np.ndarray] = []
        self.keep_crops = find_inception_weights(options.inception_weights) is not None
        self.orig_crops: list[np.ndarray] = []
        self.anon_crops: list[np.ndarray] = []
        self._fid_seen = 0
        self._fid_rng = np.random.default_rng(0)
        self.temporal_pairs: list[dict] = []
        self.frames = 0
        self._frames_with_faces = 0
        self._state: dict[int, _TrackState] = {}
        self._prev: FramePair | None = None
        self._worst: dict[str, list[tuple[float, int, dict]]] = {}  # reason -> min-heap of (badness, seq, item)
        self._seq = itertools.count()
        self._next_image_track = 1
        self._sequence = 0  # the frame sequence being measured (folders of frames)
        self._track_base = 0  # added to the tracker's ids: they restart in each sequence
        self._largest_track = 0

    # -- faces of one frame ------------------------------------------------------------

    def _faces(self, pair: FramePair) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(track_id, box, keypoints)`` of every face detected in the original frame.

        Keypoints (5, 2) place dlib's predictor far better than the box alone; NaN when absent.
        """
        dets = self.models.detector(pair.original)
        missing = np.full((5, 2), np.nan, np.float32)
        if self.kind == "video":
            if pair.sequence != self._sequence:  # another camera: new tracks, nothing carried over
                self._sequence, self._track_base = pair.sequence, self._largest_track
                self.tracker.reset()
                self._state, self._prev = {}, None
            tracked = [f for f in self.tracker.update(dets, pair.time) if f.detected]
            self._largest_track = max([self._largest_track] + [self._track_base + f.track_id for f in tracked])
            return [
                (
                    self._track_base + f.track_id,
                    np.asarray(f.raw_box if f.raw_box is not None else f.box, np.float32),
                    missing if f.keypoints is None else np.asarray(f.keypoints, np.float32),
                )
                for f in tracked
            ]
        faces = []
        for box, keypoints in zip(dets.boxes, dets.keypoints):  # images: each face is its own one-frame track
            faces.append((self._next_image_track, np.asarray(box, np.float32), np.asarray(keypoints, np.float32)))
            self._next_image_track += 1
        return faces

    def add(self, pair: FramePair) -> None:
        """Measure every face of one frame pair."""
        self.frames += 1
        faces = self._faces(pair)
        if faces:
            self._frames_with_faces += 1
            boxes = np.stack([b for _, b, _ in faces])
            keypoints = np.stack([k for _, _, k in faces])
            lm_orig = np.asarray(self.models.landmarks.predict(pair.original, boxes, keypoints), np.float64)
            anon_detections = self.models.detector(pair.anonymized)
            anon_dets = anon_detections.boxes
            anon_boxes, anon_keypoints = self._anonymized_placement(boxes, keypoints, anon_detections)
            lm_anon = np.asarray(self.models.landmarks.predict(pair.anonymized, anon_boxes, anon_keypoints), np.float64)
            hog_boxes = self.models.hog_boxes(pair.anonymized)
            # HOG misses small and turned faces even in the original: its rate there is the
            # reference the anonymized rate should be read against.
            hog_original = self.models.hog_boxes(pair.original)
            emb_orig = np.asarray(self.models.embedder.embed_many(pair.original, lm_orig), np.float64)
            emb_anon = np.asarray(self.models.embedder.embed_many(pair.anonymized, lm_orig), np.float64)
            if self.models.emotion is not None:
                emo_orig = self.models.emotion.predict(pair.original, list(lm_orig))
                emo_anon = self.models.emotion.predict(pair.anonymized, list(lm_orig))
            for k, (track_id, box, _) in enumerate(faces):
                record = self._measure(
                    pair, track_id, box, lm_orig[k], lm_anon[k], emb_orig[k], emb_anon[k], anon_dets, hog_boxes
                )
                record["detected_hog_original"] = None if hog_original is None else matches_box(hog_original, box)
                if self.models.emotion is not None:
                    record["emotion_original"] = int(emo_orig[k])
                    record["emotion_anonymized"] = int(emo_anon[k])
                    record["emotion_agree"] = bool(emo_orig[k] == emo_anon[k])
                else:
                    record["emotion_agree"] = None
                self.records.append(record)
        if self.kind == "video":
            live = {tid for tid, _, _ in faces}
            self._state = {tid: s for tid, s in self._state.items() if tid in live}
            self._prev = pair

    @staticmethod
    def _anonymized_placement(boxes: np.ndarray, keypoints: np.ndarray, anon_detections) -> tuple[np.ndarray, np.ndarray]:
        """Where to run the landmark predictor on the anonymized frame, face by face.

        A face the detector finds in the anonymized frame (matching the original's box) is
        measured at that detection, so a face that moved is measured where it is; a face it
        cannot find (blurred, say) falls back to the original's box and keypoints.
        """
        boxes, keypoints = boxes.copy(), keypoints.copy()
        for k, box in enumerate(boxes):
            j = matching_index(anon_detections.boxes, box)
            if j is not None:
                boxes[k] = anon_detections.boxes[j]
                keypoints[k] = anon_detections.keypoints[j]
        return boxes, keypoints

    def _measure(
        self,
        pair: FramePair,
        track_id: int,
        box: np.ndarray,
        lm_o: np.ndarray,
        lm_a: np.ndarray,
        emb_o: np.ndarray,
        emb_a: np.ndarray,
        anon_dets: np.ndarray,
        hog_boxes: np.ndarray | None,
    ) -> dict:
        """One face's record: ``lm_o``/``emb_o`` from the original, ``lm_a`` re-predicted on the
        anonymized frame, ``emb_a`` the anonymized face at the original's landmarks."""
        iod = lmk.inter_ocular_distance(lm_o)
        distance = identity.embedding_distance(emb_o, emb_a)
        record: dict = {
            "frame": pair.index,
            "track_id": int(track_id),
            "box": [float(v) for v in box],
            "iod": iod,
            "detected_ours": matches_box(anon_dets, box),
            "detected_hog": None if hog_boxes is None else matches_box(hog_boxes, box),
            "cosine": identity.cosine_similarity(emb_o, emb_a),
            "distance": distance,
            "reid": identity.is_reidentified(distance),
            "pose_nme": lmk.pose_nme(lm_o, lm_a, iod),
            "expression_nme": lmk.expression_nme(lm_o, lm_a, iod),
        }
        self.orig_embeddings.append(emb_o)
        self.anon_embeddings.append(emb_a)

        # Photometric metrics on one aligned crop pair, inside the landmark hull.
        matrix = regions.crop_matrix(lm_o)
        crop_o = regions.warp_crop(pair.original, matrix)
        crop_a = regions.warp_crop(pair.anonymized, matrix)
        mask = regions.hull_mask(regions.transform_points(lm_o, matrix), regions.CROP_SIZE, regions.CROP_SIZE)
        record["si_mse"] = lighting.si_mse(crop_o / 255.0, crop_a / 255.0, mask)
        albedo, shading = lighting.shading_maps(np.stack([crop_o, crop_a]))
        record["si_l2_shading"] = lighting.si_l2(shading[0], shading[1], mask)
        record.update(color.albedo_color_differences(albedo[0], albedo[1], mask))
        record["detail_ratio"] = detail.detail_ratio(crop_o, crop_a, mask)
        record["noise_ratio"] = detail.noise_ratio(pair.original, pair.anonymized, lm_o)
        if self.keep_crops:
            self._keep_for_fid(crop_o, crop_a)

        if self.kind == "video":
            self._temporal(pair, track_id, lm_o, lm_a, emb_a, iod)
        self._remember_worst(record, crop_o, crop_a)
        return record

    def _keep_for_fid(self, crop_o: np.ndarray, crop_a: np.ndarray) -> None:
        """Reservoir sampling: a uniform sample of at most MAX_FID_FACES crop pairs of the clip."""
        self._fid_seen += 1
        if len(self.orig_crops) < MAX_FID_FACES:
            self.orig_crops.append(crop_o)
            self.anon_crops.append(crop_a)
            return
        slot = int(self._fid_rng.integers(self._fid_seen))
        if slot < MAX_FID_FACES:
            self.orig_crops[slot], self.anon_crops[slot] = crop_o, crop_a

    def _temporal(
        self, pair: FramePair, track_id: int, lm_o: np.ndarray, lm_a: np.ndarray, emb_a: np.ndarray, iod: float
    ) -> None:
        """Frame-to-frame changes of a track, when its previous frame was the one just before."""
        prev = self._state.get(track_id)
        if prev is not None and prev.frame == pair.index - 1 and self._prev is not None:
            h, w = pair.original.shape[:2]
            x1, y1, x2, y2 = regions.box_of(lm_o, h, w, margin=0.0)
            mask = regions.hull_mask(lm_o - [x1, y1], y2 - y1, x2 - x1)
            window = (slice(y1, y2), slice(x1, x2))
            self.temporal_pairs.append(
                {
                    "frame": pair.index,
                    "track_id": int(track_id),
                    "identity_stability": identity.cosine_similarity(prev.anon_embedding, emb_a),
                    "motion_original": temporal.landmark_motion(prev.orig_landmarks, lm_o, iod),
                    "motion_anonymized": temporal.landmark_motion(prev.anon_landmarks, lm_a, iod),
                    "flicker_original": temporal.temporal_difference(self._prev.original[window], pair.original[window], mask),
                    "flicker_anonymized": temporal.temporal_difference(
                        self._prev.anonymized[window], pair.anonymized[window], mask
                    ),
                }
            )
        self._state[track_id] = _TrackState(pair.index, emb_a, lm_o, lm_a)

    def _remember_worst(self, record: dict, crop_o: np.ndarray, crop_a: np.ndarray) -> None:
        """Keep thumbnails of the worst faces: for privacy (closest to the original identity)
        and for utility (largest pose error). Bounded heaps, so memory does not grow with the clip."""
        if self.options.worst <= 0:
            return
        thumb = None
        for reason, key, badness in (
            ("re-id distance", "distance", -record["distance"]),
            ("pose NME", "pose_nme", record["pose_nme"]),
        ):
            if not np.isfinite(badness):
                continue
            heap = self._worst.setdefault(reason, [])
            if len(heap) >= self.options.worst and badness <= heap[0][0]:
                continue
            if thumb is None:
                import cv2

                thumb = np.concatenate(
                    [cv2.resize(c, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA) for c in (crop_o, crop_a)],
                    axis=1,
                )
            item = (badness, next(self._seq), {"frame": record["frame"], "track_id": record["track_id"],
                                               "reason": reason, "value": float(record[key]), "image": thumb})
            if len(heap) < self.options.worst:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    # -- results --------------------------------------------------------------------------

    def thumbnails(self) -> list[dict]:
        """The worst faces with side-by-side RGB images: most re-identifiable first, then
        the largest pose errors."""
        out = []
        for reason in ("re-id distance", "pose NME"):
            heap = self._worst.get(reason, [])
            out += [item for _, _, item in sorted(heap, key=lambda x: (-x[0], x[1]))]
        return out

    def result(self, original: str, anonymized: str) -> dict:
        """The ClipReport dict (JSON-ready: no NaN, no arrays)."""
        recs = self.records
        tracks_detail = []
        for tid, group in group_by(recs, "track_id").items():
            frames = [r["frame"] for r in group]
            tracks_detail.append(
                {"track_id": tid, "first_frame": min(frames), "last_frame": max(frames), "faces": len(group),
                 "inter_ocular_px": summarize(r["iod"] for r in group),
                 "metrics": summarize_records(group, FACE_METRICS)}
            )
        leaks = [
            {"frame": r["frame"], "track_id": r["track_id"], "distance": round(r["distance"], 4)}
            for r in recs if r["reid"]
        ]
        leak_frames = sorted({l["frame"] for l in leaks})
        fid = self._fid()
        notes = list(self.models.notes)
        if fid.get("status") != "ok":
            notes.append(f"FID unavailable: {fid.get('reason', 'not computed')}")
        notes.append("Si-L2 uses the project's bilateral shading, not SfSNet as in the seed paper.")
        report = {
            "label": self.options.label,
            "original": str(original),
            "anonymized": str(anonymized),
            "kind": self.kind,
            "frames": self.frames,
            "faces": len(recs),
            "tracks": len(tracks_detail),
            "metrics": summarize_records(recs, FACE_METRICS),
            "inter_ocular_px": summarize(r["iod"] for r in recs),
            "tracks_detail": tracks_detail,
            "temporal": self._temporal_summary() if self.kind == "video" else None,
            "realism": {
                "fid": fid,
                "frechet_embedding": finite_or_none(
                    frechet_distance_features(np.array(self.orig_embeddings), np.array(self.anon_embeddings))
                    if len(recs) >= 2 else float("nan")
                ),
            },
            "coverage": {
                "frames_with_faces": self._frames_with_faces,
                "leak_frames": leak_frames,
                "leak_rate": (len(leak_frames) / self._frames_with_faces) if self._frames_with_faces else None,
                "leaks": leaks,
            },
            "worst": [{k: v for k, v in t.items() if k != "image"} for t in self.thumbnails()],
            "notes": notes,
        }
        return _json_safe(report)

    def _temporal_summary(self) -> dict:
        pairs = self.temporal_pairs
        jitter_by_track = {
            tid: temporal.jitter_ratio([p["motion_anonymized"] for p in g], [p["motion_original"] for p in g])
            for tid, g in group_by(pairs, "track_id").items()
        }
        flicker_o = summarize(p["flicker_original"] for p in pairs)
        flicker_a = summarize(p["flicker_anonymized"] for p in pairs)
        ratio = None
        if flicker_o["mean"] and flicker_a["mean"] is not None:
            ratio = flicker_a["mean"] / flicker_o["mean"]
        return {
            "pairs": len(pairs),
            "identity_stability": summarize(p["identity_stability"] for p in pairs),
            "identity_switch_frames": [
                p["frame"] for p in pairs if temporal.is_identity_switch(p["identity_stability"])
            ],
            "jitter_ratio": temporal.jitter_ratio(
                [p["motion_anonymized"] for p in pairs], [p["motion_original"] for p in pairs]
            ),
            "jitter_ratio_by_track": {str(k): v for k, v in jitter_by_track.items()},
            "motion_original": summarize(p["motion_original"] for p in pairs),
            "motion_anonymized": summarize(p["motion_anonymized"] for p in pairs),
            "flicker_original": flicker_o,
            "flicker_anonymized": flicker_a,
            "flicker_ratio": ratio,
        }

    def _fid(self) -> dict:
        return fid_between(self.orig_crops, self.anon_crops, self.options.inception_weights)


def _json_safe(value):
    """Recursively replace NaN/inf by None and numpy scalars by Python ones."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return finite_or_none(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def evaluate_pair(
    original: str | os.PathLike,
    anonymized: str | os.PathLike,
    options: EvalOptions = EvalOptions(),
    models: Models | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict, list[dict]]:
    """Evaluate one anonymized clip against its original.

    Returns ``(clip_report, thumbnails)``: the JSON-ready ClipReport (schema in
    :mod:`streamanon.metrics.report`) and the worst faces with their images.
    """
    kind, pairs = iter_pairs(original, anonymized, options.max_frames, options.sequence_fps)
    models = models or Models.load(options)
    evaluator = ClipEvaluator(models, options, kind)
    for pair in pairs:
        evaluator.add(pair)
        if progress is not None:
            progress(pair.index)
    if evaluator.frames == 0:
        raise UserError(f"no frames to evaluate in {original}")
    return evaluator.result(str(original), str(anonymized)), evaluator.thumbnails()
