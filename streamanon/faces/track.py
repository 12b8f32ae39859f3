"""Face tracking: associate detections over frames, keep ids, coast over missed detections.

Each frame :meth:`FaceTracker.update` takes the detector's boxes and returns one
:class:`~streamanon.types.TrackedFace` per live track:

* **matched** tracks (``detected=True``): ``raw_box`` is the detection, ``box`` its
  One-Euro smoothed version (smoothed as centre and size, speed normalised by face size);
* **coasting** tracks (``detected=False``): ``box`` is a constant-velocity prediction
  from the last state, grown a little each missed frame so a moving face stays covered.
  A track missing more than ``max_missed`` frames in a row is dropped.

Association matches detections to the tracks' *predicted* boxes (so two faces crossing
keep their ids) by minimum total cost ``1 - IoU`` (plus a small centre-distance term that
breaks ties) with the Hungarian algorithm, allowing only pairs with ``IoU >= iou_threshold``
whose centres are within :data:`CENTRE_GATE` face sizes.

Motion model: velocity (of centre and size) is the least-squares slope over the last
few raw detections, capped relative to the face size. While coasting, the velocity
decays exponentially with time constant :data:`VELOCITY_DECAY_S`, so the predicted
displacement is bounded (``v * VELOCITY_DECAY_S``) and a lost track cannot fly away.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..config import SmoothConfig, TrackConfig
from ..errors import UserError
from ..types import Detections, TrackedFace
from .detect import keypoint_roll
from .smooth import Smoother, make_filter

log = logging.getLogger(__name__)

#: Raw detections kept per track for the velocity fit.
HISTORY: int = 6
#: Only detections this recent (seconds before the newest) enter the velocity fit.
HISTORY_WINDOW_S: float = 0.5
#: Time constant (seconds) of the velocity's exponential decay while coasting.
VELOCITY_DECAY_S: float = 1.0
#: Largest believable centre speed, in face sizes per second (caps jitter-made velocities).
MAX_CENTRE_SPEED: float = 8.0
#: Largest believable relative size change per second.
MAX_SIZE_RATE: float = 1.0
#: A coasting box grows by this fraction of its size per missed frame (linear).
COAST_GROWTH: float = 0.05
#: A coasting track's score is multiplied by this per missed frame.
SCORE_DECAY: float = 0.85
#: Largest centre distance, in face sizes, between a predicted box and a detection it may match.
CENTRE_GATE: float = 1.0
#: Weight of the normalised centre distance in the cost; breaks ties between equal IoUs.
DISTANCE_WEIGHT: float = 0.1
#: Landmark arrays have this shape (dlib's 68-point order).
LANDMARK_SHAPE: tuple[int, int] = (68, 2)

_INFEASIBLE = 1e6


def _to_cxcywh(box: np.ndarray) -> np.ndarray:
    """``x1 y1 x2 y2`` -> ``cx cy w h`` (float64)."""
    box = np.asarray(box, np.float64)
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]])


def _to_xyxy(state: np.ndarray) -> np.ndarray:
    """``cx cy w h`` -> ``x1 y1 x2 y2`` (float32)."""
    cx, cy, w, h = state
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


def _face_size(w: float, h: float) -> float:
    """One number for a face's size in pixels: the geometric mean of width and height."""
    return math.sqrt(max(w, 1.0) * max(h, 1.0))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (N, 4) with every box in ``b`` (M, 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, 1e-9)


@dataclass
class _Track:
    """Internal state of one track (the public view of a frame is a ``TrackedFace``)."""

    track_id: int
    box_filter: Smoother
    landmark_filter: Smoother
    born: int  # tracker frame count at birth
    score: float = 0.0
    hits: int = 0
    missed: int = 0
    last_time: float = 0.0  # time of the last detection
    state: np.ndarray = field(default_factory=lambda: np.zeros(4))  # cx cy w h at last_time
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # per second
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))  # (t, cx, cy, w, h)
    landmarks: np.ndarray | None = None  # last smoothed (68, 2)
    roll: float = 0.0  # eye-line angle (degrees) of the last detection with keypoints
    record: TrackedFace | None = None  # this frame's public view

    def predict(self, t: float) -> np.ndarray:
        """Constant-velocity prediction (cx cy w h) at time ``t``, with decaying velocity."""
        elapsed = max(t - self.last_time, 0.0)
        # Integral of v * exp(-s / T) over [0, elapsed]: ~ v * elapsed at first, at most v * T.
        reach = VELOCITY_DECAY_S * (1.0 - math.exp(-elapsed / VELOCITY_DECAY_S))
        state = self.state + self.velocity * reach
        # A shrinking face must not shrink to nothing while we cannot see it.
        state[2:] = np.maximum(state[2:], 0.5 * self.state[2:])
        return state

    def observe(self, box: np.ndarray, score: float, t: float) -> None:
        """Take a matched detection: refit the motion model on the recent raw boxes."""
        raw = _to_cxcywh(box)
        self.history.append((t, *raw))
        self.hits += 1
        self.missed = 0
        self.score = float(score)
        self.last_time = t
        self.state, self.velocity = _fit_motion(self.history, raw, t)


def _fit_motion(history: deque, raw: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through the recent raw (cx, cy, w, h): its value at ``t`` and slope.

    Fitting several detections rather than differencing two keeps detector jitter out of
    the velocity; the slope is then capped relative to the face size.
    """
    rows = np.array([h for h in history if t - h[0] <= HISTORY_WINDOW_S], np.float64).reshape(-1, 5)
    if len(rows) < 2:
        return raw.copy(), np.zeros(4)
    times, values = rows[:, 0], rows[:, 1:]
    dt = times - times.mean()
    spread = float(dt @ dt)
    if spread < 1e-9:  # equal timestamps: no motion information
        return raw.copy(), np.zeros(4)
    slope = (dt @ (values - values.mean(axis=0))) / spread
    state = values.mean(axis=0) + slope * (t - times.mean())
    state[2:] = np.maximum(state[2:], 1.0)
    size = _face_size(state[2], state[3])
    speed = math.hypot(slope[0], slope[1])
    if speed > MAX_CENTRE_SPEED * size:
        slope[:2] *= MAX_CENTRE_SPEED * size / speed
    slope[2:] = np.clip(slope[2:], -MAX_SIZE_RATE * state[2:], MAX_SIZE_RATE * state[2:])
    return state, slope


def _clean(detections: Detections) -> Detections:
    """Drop detections whose box is not finite or has no extent."""
    boxes = np.asarray(detections.boxes, np.float64).reshape(-1, 4)
    ok = np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return detections if ok.all() else detections[np.flatnonzero(ok)]


class FaceTracker:
    """Keeps face identities over frames and predicts the faces it briefly loses sight of.

    Args:
        track_cfg: association threshold, how long to coast, hits before reporting.
        smooth_cfg: One-Euro parameters for boxes and landmarks (or disabled).
    """

    def __init__(self, track_cfg: TrackConfig, smooth_cfg: SmoothConfig) -> None:
        if not (0.0 <= track_cfg.iou_threshold <= 1.0):
            raise UserError(f"track.iou_threshold must be in [0, 1], got {track_cfg.iou_threshold}")
        if track_cfg.max_missed < 0:
            raise UserError(f"track.max_missed must be 0 or more, got {track_cfg.max_missed}")
        if track_cfg.min_hits < 1:
            raise UserError(f"track.min_hits must be 1 or more, got {track_cfg.min_hits}")
        make_filter(smooth_cfg)  # validate the smoothing settings now, not at the first face
        self.track_cfg = track_cfg
        self.smooth_cfg = smooth_cfg
        self.reset()

    def reset(self) -> None:
        """Forget every track and restart ids at 1, as if newly constructed."""
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame = 0

    @property
    def tracks(self) -> list[TrackedFace]:
        """This frame's view of the reported (live, confirmed) tracks, as ``update`` returned it."""
        return [tr.record for tr in self._tracks if tr.record is not None]

    def update(self, detections: Detections, t: float) -> list[TrackedFace]:
        """Take one frame's detections at time ``t`` (seconds); return every live track.

        Matched tracks come first (in detection order), then coasting ones (oldest
        first). A track with fewer than ``min_hits`` detections is not reported yet, and
        is dropped at its first miss (most likely a false detection).
        Timestamps should increase; an equal or earlier one is tolerated (no motion is
        predicted for it).
        """
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"FaceTracker.update got a non-finite time {t}")
        detections = _clean(detections)
        matches, unmatched_tracks, unmatched_dets = self._associate(detections, t)

        detection_of: dict[int, int] = {}  # id(track) -> index of its detection this frame
        rolls = keypoint_roll(detections.keypoints)
        for ti, di in matches:
            track = self._tracks[ti]
            track.observe(detections.boxes[di], float(detections.scores[di]), t)
            if np.isfinite(rolls[di]):
                track.roll = float(rolls[di])
            detection_of[id(track)] = di
        survivors: list[_Track] = []
        for ti, track in enumerate(self._tracks):
            if ti in unmatched_tracks:
                track.missed += 1
                # A tentative track that is missed at once was most likely a false detection.
                if track.missed > self.track_cfg.max_missed or track.hits < self.track_cfg.min_hits:
                    log.info("track %d ended at %.2f s: not seen for %d frames (%d detections)",
                             track.track_id, t, track.missed, track.hits)  # fmt: skip
                    continue
            survivors.append(track)
        for di in unmatched_dets:
            track = self._new_track()
            track.observe(detections.boxes[di], float(detections.scores[di]), t)
            x1, y1, x2, y2 = detections.boxes[di]
            log.info("track %d started at %.2f s: %.0fx%.0f px face at (%.0f, %.0f), score %.2f",
                     track.track_id, t, x2 - x1, y2 - y1, x1, y1, detections.scores[di])  # fmt: skip
            track.roll = float(rolls[di]) if np.isfinite(rolls[di]) else 0.0
            detection_of[id(track)] = di
            survivors.append(track)
        self._tracks = survivors

        matched = sorted((tr for tr in self._tracks if tr.missed == 0), key=lambda tr: detection_of[id(tr)])
        coasting = [tr for tr in self._tracks if tr.missed > 0]
        faces: list[TrackedFace] = []
        for track in matched:
            track.record = self._matched_record(track, detections, detection_of[id(track)], t)
        for track in coasting:
            track.record = self._coasting_record(track, t)
        for track in [*matched, *coasting]:
            if track.hits < self.track_cfg.min_hits:
                track.record = None
            elif track.record is not None:
                faces.append(track.record)
        self._frame += 1
        return faces

    def predicted_boxes(self, t: float) -> np.ndarray:
        """Where the live tracks are expected at time ``t``: (N, 4) float32 x1 y1 x2 y2, widened
        for each frame a coasting track went unseen (the boxes association will search)."""
        if not self._tracks:
            return np.zeros((0, 4), np.float32)
        return np.stack([_to_xyxy(self._grow(tr.predict(float(t)), tr.missed)) for tr in self._tracks]).astype(np.float32)

    def lost(self, detections: Detections, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The reported tracks that none of ``detections`` would match at time ``t`` (the faces
        about to coast): their search boxes (N, 4) float32, as :meth:`predicted_boxes`, and the
        eye-line angle (N,) degrees each last had. Nothing changes; :meth:`update` follows."""
        _, unmatched, _ = self._associate(_clean(detections), float(t))
        lost = [self._tracks[i] for i in sorted(unmatched) if self._tracks[i].hits >= self.track_cfg.min_hits]
        if not lost:
            return np.zeros((0, 4), np.float32), np.zeros(0)
        boxes = np.stack([_to_xyxy(self._grow(tr.predict(float(t)), tr.missed)) for tr in lost]).astype(np.float32)
        return boxes, np.array([tr.roll for tr in lost])

    def set_landmarks(self, track_id: int, landmarks: np.ndarray, t: float) -> np.ndarray:
        """Smooth one frame's 68 landmarks ``(68, 2)`` of a track; store and return them.

        Each track has its own One-Euro filter; its speed is normalised by the face size
        measured from the landmarks themselves (geometric mean of their x and y extents),
        so the same parameters suit small and large faces. The result is also set on the
        track's current :class:`TrackedFace` (``landmarks``).
        """
        track = next((tr for tr in self._tracks if tr.track_id == track_id), None)
        if track is None:
            raise ValueError(f"no live track with id {track_id}")
        points = np.asarray(landmarks, np.float64)
        if points.shape != LANDMARK_SHAPE:
            raise ValueError(f"landmarks must have shape {LANDMARK_SHAPE}, got {points.shape}")
        extent = np.ptp(points, axis=0)
        smoothed = track.landmark_filter(points, float(t), scale=_face_size(extent[0], extent[1]))
        smoothed = smoothed.astype(np.float32)
        track.landmarks = smoothed
        if track.record is not None:
            track.record.landmarks = smoothed
        return smoothed.copy()

    # -- records -------------------------------------------------------------------------

    def _new_track(self) -> _Track:
        track = _Track(
            track_id=self._next_id,
            box_filter=make_filter(self.smooth_cfg),
            landmark_filter=make_filter(self.smooth_cfg),
            born=self._frame,
        )
        self._next_id += 1
        return track

    def _matched_record(self, track: _Track, detections: Detections, di: int, t: float) -> TrackedFace:
        raw_box = np.asarray(detections.boxes[di], np.float32).copy()
        raw = _to_cxcywh(raw_box)
        # Smoothing centre and size separately lets a moving face's centre follow quickly
        # while the detector's size jitter stays damped.
        smoothed = track.box_filter(raw, t, scale=_face_size(raw[2], raw[3]))
        return TrackedFace(
            track_id=track.track_id,
            box=_to_xyxy(smoothed),
            score=track.score,
            detected=True,
            missed=0,
            age=self._frame - track.born,
            raw_box=raw_box,
            keypoints=np.asarray(detections.keypoints[di], np.float32).copy(),
        )

    def _coasting_record(self, track: _Track, t: float) -> TrackedFace:
        predicted = track.predict(t)
        # Keep the box filter on the predicted path so the smoothed box does not jump
        # back to a stale position when the face is detected again.
        track.box_filter(predicted, t, scale=_face_size(predicted[2], predicted[3]))
        return TrackedFace(
            track_id=track.track_id,
            box=_to_xyxy(self._grow(predicted, track.missed)),
            score=track.score * SCORE_DECAY**track.missed,
            detected=False,
            missed=track.missed,
            age=self._frame - track.born,
        )

    @staticmethod
    def _grow(state: np.ndarray, missed: int) -> np.ndarray:
        """Widen a predicted (cx cy w h) for ``missed`` frames of growing uncertainty."""
        grown = state.copy()
        grown[2:] *= 1.0 + COAST_GROWTH * missed
        return grown

    # -- association -------------------------------------------------------------------

    def _associate(self, detections: Detections, t: float) -> tuple[list[tuple[int, int]], set[int], list[int]]:
        """Hungarian matching of detections to predicted track boxes."""
        n_tracks, n_dets = len(self._tracks), len(detections)
        if n_tracks == 0 or n_dets == 0:
            return [], set(range(n_tracks)), list(range(n_dets))
        # Coasting tracks are matched with their grown box: the longer unseen, the wider the search.
        predicted = np.stack([self._grow(tr.predict(t), tr.missed) for tr in self._tracks])
        pred_boxes = np.stack([_to_xyxy(p) for p in predicted]).astype(np.float64)
        det_boxes = np.asarray(detections.boxes, np.float64).reshape(-1, 4)
        iou = iou_matrix(pred_boxes, det_boxes)

        det_state = np.stack([_to_cxcywh(b) for b in det_boxes])
        pred_size = np.sqrt(np.maximum(predicted[:, 2], 1.0) * np.maximum(predicted[:, 3], 1.0))
        det_size = np.sqrt(np.maximum(det_state[:, 2], 1.0) * np.maximum(det_state[:, 3], 1.0))
        distance = np.hypot(predicted[:, None, 0] - det_state[None, :, 0], predicted[:, None, 1] - det_state[None, :, 1])
        distance /= np.maximum(pred_size[:, None], det_size[None, :])

        feasible = (iou >= self.track_cfg.iou_threshold) & (distance <= CENTRE_GATE)
        cost = np.where(feasible, 1.0 - iou + DISTANCE_WEIGHT * distance, _INFEASIBLE)
        rows, cols = linear_sum_assignment(cost)
        matches = [(int(r), int(c)) for r, c in zip(rows, cols) if feasible[r, c]]
        matched_tracks = {r for r, _ in matches}
        matched_dets = {c for _, c in matches}
        unmatched_tracks = set(range(n_tracks)) - matched_tracks
        unmatched_dets = [d for d in range(n_dets) if d not in matched_dets]
        return matches, unmatched_tracks, unmatched_dets
