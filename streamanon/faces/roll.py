"""Detector keypoints the landmark stage can trust at any roll.

CenterFace finds large faces rolled far past its ~45-degree range, but fits its upright keypoint
template to them: on a talking face turned frame by frame (``benchmarks/rolling_faces.py``) the
keypoints' eye line was 30-140 degrees off from 60 degrees of roll on, the 68 landmarks the
predictor grew from them fell beside the face (error over the eye distance above 1), and generate
mode pasted its face askew, leaving an eye of the original showing. A search of the face's region
turned so that the face stands upright gives keypoints the network saw upright.

:class:`RollChecker` confirms each face's keypoints that way before the landmark stage, per track:
a face level in the last frame and now (the common case) costs nothing; a rolled one is searched at
the roll it had in the last frame (one 128 px region, ~2.5 ms on a CPU core); a new or lost one at
its keypoints' roll and a quarter and half turn from it, keeping the best-scored find that is upright
in its region. The detector's keypoints stay where they agree with the confirmed ones (its pass saw
the face at a higher resolution); a face no search confirms keeps them too (as before).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .detect import UPRIGHT_SKEW, CenterFaceDetector, box_iou, keypoint_roll, keypoint_skew

# A face whose keypoints, and whose confirmed roll in the last frame, are within this many degrees of
# level is taken as the detector saw it: the upright pass's keypoints are right there.
LEVEL_ROLL = 15.0
# Angles from the anchor searched for a face without a confirmed roll: each pass finds faces within
# ~45 degrees of its own angle, so four cover every roll.
TURNS = (0.0, 90.0, -90.0, 180.0)
# The detector's keypoints stand when each lies within this share of the eye distance of the
# confirmed one: at 165 degrees of roll they can keep a plausible eye line and mouth yet sit a whole
# eye distance off, and the landmarks grown from them miss the face.
AGREE_EYES = 0.25
# A find counts for a face when its box overlaps the face's detection box this much (IoU; a turned
# find's box bounds its turned corners, so it is larger than the detection's).
MATCH_IOU = 0.3


class RollChecker:
    """Per-track confirmation of detector keypoints by searches turned to the face's roll.

    Args:
        detector: the pipeline's detector (its :meth:`~CenterFaceDetector.detect_rolled` runs the searches).
    """

    def __init__(self, detector: CenterFaceDetector) -> None:
        self.detector = detector
        self.rolls: dict[int, float] = {}  # track id -> roll confirmed in the last frame it was checked

    def reset(self) -> None:
        """Forget every track's roll."""
        self.rolls.clear()

    def __call__(self, image: np.ndarray, track_ids: Sequence[int], boxes: np.ndarray,
                 keypoints: np.ndarray) -> np.ndarray:  # fmt: skip
        """Keypoints (N, 5, 2) for the faces ``track_ids`` at ``boxes`` (N, 4) with the detector's
        ``keypoints`` (N, 5, 2; NaN rows: none): confirmed ones where a turned search found the face
        upright, the detector's elsewhere."""
        keypoints = np.array(keypoints, np.float32, copy=True)
        seen = keypoint_roll(keypoints)
        plausible = np.abs(keypoint_skew(keypoints)) < UPRIGHT_SKEW  # False for NaN rows too
        anchors: dict[int, list[float]] = {}
        for i, tid in enumerate(track_ids):
            known = self.rolls.get(tid)
            level_now = np.isfinite(seen[i]) and abs(seen[i]) <= LEVEL_ROLL and plausible[i]
            if known is not None and abs(known) <= LEVEL_ROLL and level_now:
                continue  # level a frame ago and now: the detector's keypoints stand
            if known is not None:
                anchors[i] = [known]
            else:
                start = float(seen[i]) if np.isfinite(seen[i]) else 0.0
                anchors[i] = [start + turn for turn in TURNS]
        confirmed = self._search(image, boxes, anchors)
        missing = {i: [self.rolls[track_ids[i]] + turn for turn in TURNS[1:]]
                   for i in anchors if i not in confirmed and len(anchors[i]) == 1}  # fmt: skip
        confirmed.update(self._search(image, boxes, missing))  # lost at its last roll: the other turns
        rolls = {}
        for i, tid in enumerate(track_ids):
            if i in confirmed:
                roll = float(keypoint_roll(confirmed[i][None])[0])
                # Where the detector's own keypoints agree (each within AGREE_EYES of the eye distance),
                # they stand: its pass saw the face larger than a 128 px region does.
                eyes = float(np.linalg.norm(confirmed[i][1] - confirmed[i][0]))
                apart = np.linalg.norm(keypoints[i] - confirmed[i], axis=1).max()
                if not apart <= AGREE_EYES * eyes:  # NaN rows (no keypoints) take the confirmed ones too
                    keypoints[i] = confirmed[i]
                rolls[tid] = roll
            elif i not in anchors:
                rolls[tid] = float(seen[i])
        self.rolls = rolls  # tracks not confirmed this frame start over with every turn
        return keypoints

    def _search(self, image: np.ndarray, boxes: np.ndarray, anchors: dict[int, list[float]]) -> dict[int, np.ndarray]:
        """For each face ``i`` with angles ``anchors[i]``: the keypoints of the best-scored find over
        its box in any of those turned searches (one network run for all), if any."""
        if not anchors:
            return {}
        faces = [i for i, angles in anchors.items() for _ in angles]
        angles = np.array([angle for i in anchors for angle in anchors[i]])
        found = self.detector.detect_rolled(image, boxes[faces], angles)
        if len(found) == 0:
            return {}
        confirmed = {}
        overlap = box_iou(boxes[list(anchors)], found.boxes)
        for row, i in enumerate(anchors):
            over = np.flatnonzero(overlap[row] >= MATCH_IOU)
            if len(over):
                confirmed[i] = found.keypoints[over[np.argmax(found.scores[over])]]
        return confirmed
