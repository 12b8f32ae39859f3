"""Face tracker on synthetic detections with planted trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from streamanon.config import SmoothConfig, TrackConfig
from streamanon.errors import UserError
from streamanon.faces.track import VELOCITY_DECAY_S, FaceTracker, iou_matrix
from streamanon.types import Detections

FPS = 25.0


def _box(cx: float, cy: float, size: float) -> np.ndarray:
    return np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], np.float32)


def _detections(*boxes: np.ndarray, score: float = 0.9) -> Detections:
    """Detections for the given boxes, with keypoints planted at fixed places in each box."""
    if not boxes:
        return Detections.empty()
    b = np.stack(boxes).astype(np.float32)
    fractions = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]], np.float32)
    size = b[:, 2:] - b[:, :2]
    keypoints = b[:, None, :2] + fractions[None] * size[:, None]
    return Detections(b, np.full(len(b), score, np.float32), keypoints)


def _centre(box: np.ndarray) -> np.ndarray:
    return (np.asarray(box[:2]) + np.asarray(box[2:])) / 2


def _contains(outer: np.ndarray, inner: np.ndarray, tol: float = 1e-3) -> bool:
    return bool(np.all(outer[:2] <= inner[:2] + tol) and np.all(outer[2:] >= inner[2:] - tol))


def _path(i: int) -> tuple[float, float]:
    """A face walking right and slightly down: 4 px and 1.5 px per frame (100, 37.5 px/s)."""
    return 100.0 + 4.0 * i, 200.0 + 1.5 * i


def test_linear_motion_coasts_recovers_and_drops():
    cfg = TrackConfig(max_missed=8)
    tracker = FaceTracker(cfg, SmoothConfig())
    size = 80.0
    gap = range(20, 25)  # detections vanish for 5 frames
    i = 0
    for i in range(35):
        truth = _box(*_path(i), size)
        faces = tracker.update(_detections() if i in gap else _detections(truth), i / FPS)
        assert len(faces) == 1
        face = faces[0]
        assert face.track_id == 1
        assert face.age == i
        if i in gap:
            assert not face.detected and face.raw_box is None and face.keypoints is None
            assert face.missed == i - gap.start + 1
            # The prediction continues along the velocity...
            assert np.linalg.norm(_centre(face.box) - _path(i)) < 3.0
            # ...and its slightly grown box still covers the whole moving face.
            assert _contains(face.cover_box, truth)
            assert face.score < 0.9
        else:
            assert face.detected and face.missed == 0
            np.testing.assert_array_equal(face.raw_box, truth)
            assert face.keypoints.shape == (5, 2)
            assert face.score == pytest.approx(0.9)
    coasting_scores = []
    for k in range(1, cfg.max_missed + 2):
        faces = tracker.update(_detections(), (i + k) / FPS)
        if k <= cfg.max_missed:
            assert [f.track_id for f in faces] == [1] and faces[0].missed == k
            coasting_scores.append(faces[0].score)
        else:
            assert faces == [], "a track missed more than max_missed frames must be dropped"
    assert all(a > b for a, b in zip(coasting_scores, coasting_scores[1:])), "score decays while coasting"
    assert tracker.tracks == []

    # The same place again is a new face now: a new id.
    faces = tracker.update(_detections(_box(*_path(i), size)), (i + cfg.max_missed + 2) / FPS)
    assert [f.track_id for f in faces] == [2]


def test_new_faces_get_new_increasing_ids_and_reset_restarts():
    tracker = FaceTracker(TrackConfig(), SmoothConfig())
    a, b, c = _box(100, 100, 60), _box(400, 120, 60), _box(250, 300, 50)
    assert [f.track_id for f in tracker.update(_detections(a), 0.0)] == [1]
    assert sorted(f.track_id for f in tracker.update(_detections(a, b), 0.04)) == [1, 2]
    faces = tracker.update(_detections(c, b, a), 0.08)
    # Matched tracks are listed in detection order.
    assert [f.track_id for f in faces] == [3, 2, 1]
    tracker.reset()
    assert tracker.tracks == []
    assert [f.track_id for f in tracker.update(_detections(b), 1.0)] == [1]


def _crossing(frames: int, occlude: range | None = None):
    """Two faces on crossing paths; yields (frame, {label: truth box}, detections shuffled)."""
    rng = np.random.default_rng(0)
    for i in range(frames):
        truths = {
            "left": _box(100.0 + 14.0 * i, 200.0 + 0.5 * i, 70),  # walks right (5 sizes/s), slightly down
            "right": _box(470.0 - 14.0 * i, 215.0 - 0.5 * i, 70),  # walks left, slightly up
        }
        visible = [k for k in truths if not (occlude is not None and i in occlude and k == "right")]
        order = rng.permutation(len(visible))
        yield i, truths, [visible[j] for j in order]


@pytest.mark.parametrize("occlude", [None, range(14, 18)], ids=["both-visible", "one-occluded"])
def test_two_faces_crossing_keep_their_ids(occlude):
    tracker = FaceTracker(TrackConfig(), SmoothConfig())
    ids: dict[str, int] = {}
    naive_swaps = 0
    previous: dict[str, np.ndarray] = {}
    for i, truths, visible in _crossing(30, occlude):
        dets = _detections(*(truths[k] for k in visible))
        faces = tracker.update(dets, i / FPS)
        assert len(faces) == 2, "both faces are tracked (one may be coasting) all the way"
        for face in faces:
            if face.detected:
                label = visible[[np.array_equal(face.raw_box, truths[k]) for k in visible].index(True)]
            else:
                # The coasting face's prediction must sit on its own path.
                label = min(truths, key=lambda k: np.linalg.norm(_centre(face.box) - _centre(truths[k])))
                assert np.linalg.norm(_centre(face.box) - _centre(truths[label])) < 8.0
            assert ids.setdefault(label, face.track_id) == face.track_id, f"id switch at frame {i}"
        # The planted scene is hard: matching to last frame's boxes (no velocity) would swap.
        if len(visible) == 2 and len(previous) == 2:
            iou = iou_matrix(np.stack([previous["left"], previous["right"]]), np.stack([truths["left"], truths["right"]]))
            naive_swaps += int(iou[0, 1] > iou[0, 0])
        previous = dict(truths)
    assert sorted(ids.values()) == [1, 2]
    if occlude is None:
        assert naive_swaps > 0


def test_cover_box_of_a_moving_track_contains_the_raw_detection():
    rng = np.random.default_rng(4)
    tracker = FaceTracker(TrackConfig(), SmoothConfig(min_cutoff=0.5, beta=0.0))
    lagging = 0
    for i in range(60):
        t = i / FPS
        # Accelerating, turning, growing face with detector jitter.
        cx = 200 + 3 * i + 0.15 * i * i
        cy = 300 + 40 * np.sin(i / 8)
        size = 60 + 1.2 * i
        raw = _box(cx, cy, size) + rng.normal(0, 1.5, 4).astype(np.float32)
        (face,) = tracker.update(_detections(raw), t)
        assert face.detected
        assert _contains(face.cover_box, raw)
        lagging += int(not _contains(face.box, raw))
    assert lagging > 30, "the smoothed box alone lags the moving face, so the union matters"


def test_smoothed_box_removes_jitter_of_a_still_face():
    rng = np.random.default_rng(5)
    tracker = FaceTracker(TrackConfig(), SmoothConfig())
    truth = _box(320, 240, 90)
    raw_err, box_err = [], []
    for i in range(150):
        raw = truth + rng.normal(0, 2.0, 4).astype(np.float32)
        (face,) = tracker.update(_detections(raw), i / FPS)
        assert face.track_id == 1
        if i >= 30:
            raw_err.append(raw - truth)
            box_err.append(face.box - truth)
    assert np.var(raw_err) / np.var(box_err) > 3.0


def test_coasting_velocity_is_damped():
    """A long-lost fast face's prediction stops within v * VELOCITY_DECAY_S of where it was lost."""
    tracker = FaceTracker(TrackConfig(max_missed=200), SmoothConfig())
    speed = 10.0 * FPS  # px/s
    for i in range(12):
        (face,) = tracker.update(_detections(_box(100 + 10.0 * i, 100, 60)), i / FPS)
    lost_at = 100 + 10.0 * 11
    for k in range(1, 150):
        (face,) = tracker.update(_detections(), (11 + k) / FPS)
    travelled = _centre(face.box)[0] - lost_at
    assert 0.9 * speed * VELOCITY_DECAY_S < travelled <= speed * VELOCITY_DECAY_S + 1.0
    assert abs(_centre(face.box)[1] - 100) < 1.0


def test_min_hits_hides_tentative_tracks_and_drops_them_on_a_miss():
    tracker = FaceTracker(TrackConfig(min_hits=3), SmoothConfig())
    a, b = _box(100, 100, 60), _box(400, 100, 60)
    assert tracker.update(_detections(a), 0.0) == []
    assert tracker.update(_detections(a), 0.04) == []
    assert [f.track_id for f in tracker.update(_detections(a, b), 0.08)] == [1]  # b is tentative
    faces = tracker.update(_detections(a), 0.12)  # b missed while tentative: gone
    assert [f.track_id for f in faces] == [1]
    faces = tracker.update(_detections(a, b), 0.16)
    assert [f.track_id for f in faces] == [1], "b came back as a new tentative track"
    tracker.update(_detections(a, b), 0.20)
    assert sorted(f.track_id for f in tracker.update(_detections(a, b), 0.24)) == [1, 3]


def test_set_landmarks_smooths_per_track_and_stores_them():
    rng = np.random.default_rng(6)
    tracker = FaceTracker(TrackConfig(), SmoothConfig())
    template = rng.uniform(0, 1, size=(68, 2)) * 100 + 150  # a 100 px face
    small = rng.uniform(0, 1, size=(68, 2)) * 30 + 500  # a 30 px face: its own filter
    raw_err, out_err = [], []
    for i in range(120):
        t = i / FPS
        faces = tracker.update(_detections(_box(200, 200, 100), _box(515, 515, 30)), t)
        big_id, small_id = faces[0].track_id, faces[1].track_id
        noisy = template + rng.normal(0, 1.5, size=(68, 2))
        out = tracker.set_landmarks(big_id, noisy, t)
        tracker.set_landmarks(small_id, small, t)
        assert out.shape == (68, 2) and out.dtype == np.float32
        np.testing.assert_array_equal(faces[0].landmarks, out)
        np.testing.assert_allclose(faces[1].landmarks, small, atol=1e-3)  # never mixed with the big face
        if i >= 30:
            raw_err.append(noisy - template)
            out_err.append(out - template)
    assert np.var(raw_err) / np.var(out_err) > 3.0
    with pytest.raises(ValueError):
        tracker.set_landmarks(99, template, 5.0)
    with pytest.raises(ValueError):
        tracker.set_landmarks(big_id, template[:5], 5.0)


def test_smoothing_disabled_gives_raw_boxes():
    tracker = FaceTracker(TrackConfig(), SmoothConfig(enabled=False))
    rng = np.random.default_rng(7)
    for i in range(10):
        raw = _box(100 + 5 * i, 100, 60) + rng.normal(0, 2, 4).astype(np.float32)
        (face,) = tracker.update(_detections(raw), i / FPS)
        np.testing.assert_allclose(face.box, raw, atol=1e-3)


def test_degenerate_inputs_do_not_break_the_tracker():
    tracker = FaceTracker(TrackConfig(), SmoothConfig())
    assert tracker.update(Detections.empty(), 0.0) == []
    bad = np.array([np.nan, 0, 10, 10], np.float32)
    empty_box = np.array([50, 50, 50, 70], np.float32)
    faces = tracker.update(_detections(bad, empty_box, _box(100, 100, 40)), 0.0)
    assert len(faces) == 1
    for _ in range(5):  # repeated timestamps
        faces = tracker.update(_detections(_box(103, 100, 40)), 0.0)
        assert [f.track_id for f in faces] == [1]
        assert np.all(np.isfinite(faces[0].box))
    faces = tracker.update(_detections(), 0.0)  # coast at an unchanged time
    assert np.all(np.isfinite(faces[0].box))
    with pytest.raises(ValueError):
        tracker.update(Detections.empty(), float("nan"))


@pytest.mark.parametrize(
    "cfg", [TrackConfig(iou_threshold=1.5), TrackConfig(max_missed=-1), TrackConfig(min_hits=0)]
)
def test_bad_config_is_a_user_error(cfg):
    with pytest.raises(UserError):
        FaceTracker(cfg, SmoothConfig())
    with pytest.raises(UserError):
        FaceTracker(TrackConfig(), SmoothConfig(min_cutoff=-1.0))


def test_lost_names_the_tracks_a_frame_would_leave_unmatched_and_their_roll():
    tracker = FaceTracker(TrackConfig(), SmoothConfig())
    a, b = _box(100, 100, 60), _box(300, 100, 60)
    turned = _detections(b)
    turned.keypoints[:] = turned.keypoints[:, :, ::-1]  # eyes one above the other: rolled 90 degrees
    tracker.update(_detections(a) + turned, 0.0)
    boxes, rolls = tracker.lost(_detections(_box(102, 100, 60)), 1 / FPS)  # only a seen again
    assert len(boxes) == 1 and _contains(boxes[0], b, tol=2.0)
    assert rolls[0] == pytest.approx(90.0)
    assert len(tracker.tracks) == 2 and all(t.detected for t in tracker.tracks)  # nothing changed
    faces = tracker.update(_detections(_box(102, 100, 60)), 1 / FPS)
    assert [f.detected for f in faces] == [True, False]  # b coasts, as lost() said
    assert len(tracker.lost(_detections(_box(104, 100, 60), b), 2 / FPS)[0]) == 0
