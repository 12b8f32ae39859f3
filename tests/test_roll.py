"""faces/roll.py: keypoints confirmed by searches turned to the face's roll."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import shared_path

from streamanon.faces.detect import CenterFaceDetector, keypoint_roll
from streamanon.faces.landmarks import read_pts
from streamanon.faces.roll import LEVEL_ROLL, RollChecker
from streamanon.io.images import read_image

PHOTO = "landmarks68/helen_test/3004312424_1.jpg"


def _turned(degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The annotated photo turned about its centre (OpenCV: counter-clockwise on screen) and its 68 points."""
    photo = read_image(shared_path(PHOTO))
    truth = read_pts(shared_path(PHOTO).with_suffix(".pts"))
    height, width = photo.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), degrees, 1.0)
    return cv2.warpAffine(photo, matrix, (width, height)), truth @ matrix[:, :2].T + matrix[:, 2]


def _roll_error(keypoints: np.ndarray, truth: np.ndarray) -> float:
    true_roll = np.degrees(np.arctan2(*(truth[45] - truth[36])[::-1]))
    return abs((float(keypoint_roll(keypoints[None])[0]) - true_roll + 180.0) % 360.0 - 180.0)


class CountingDetector:
    def __init__(self, detector: CenterFaceDetector) -> None:
        self.detector, self.regions = detector, []

    def detect_rolled(self, image, boxes, rolls):
        self.regions.append(len(boxes))
        return self.detector.detect_rolled(image, boxes, rolls)


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector()


def _largest(found):
    return int(np.argmax(np.prod(found.boxes[:, 2:] - found.boxes[:, :2], axis=1)))


def test_a_rolled_face_gets_keypoints_the_network_saw_upright(detector):
    """Turned by 110 degrees, the photo's face is still found by the upright pass but with its upright
    template (eye line far off); the checker's turned search gives keypoints along the real eye line,
    then follows the face at its last roll with one region a frame."""
    image, truth = _turned(110)
    found = detector(image)
    face = _largest(found)
    box, keypoints = found.boxes[face : face + 1], found.keypoints[face : face + 1]
    assert _roll_error(keypoints[0], truth) > 40  # the detector's own keypoints: the template
    counting = CountingDetector(detector)
    checker = RollChecker(counting)
    confirmed = checker(image, [7], box, keypoints)
    assert _roll_error(confirmed[0], truth) < 20
    assert counting.regions == [4]  # a new face: every quarter turn from its keypoints' roll
    again = checker(image, [7], box, keypoints)
    assert counting.regions == [4, 1] and _roll_error(again[0], truth) < 20  # searched at its last roll only


def test_a_level_face_is_left_as_the_detector_saw_it(detector):
    image, truth = _turned(0)
    found = detector(image)
    face = _largest(found)
    box, keypoints = found.boxes[face : face + 1], found.keypoints[face : face + 1]
    counting = CountingDetector(detector)
    checker = RollChecker(counting)
    first = checker(image, [3], box, keypoints)  # new: confirmed once, and the detector's keypoints agree
    assert np.array_equal(first, keypoints) and abs(checker.rolls[3]) <= LEVEL_ROLL
    second = checker(image, [3], box, keypoints)
    assert counting.regions == [4] and np.array_equal(second, keypoints)  # level then and now: no search
    blank = np.full_like(image, 128)  # nothing to confirm: the detector's keypoints stay, the roll is forgotten
    kept = checker(blank, [9], box, keypoints)
    assert np.array_equal(kept, keypoints) and 9 not in checker.rolls
    checker.reset()
    assert not checker.rolls


def test_keypoints_a_whole_eye_distance_off_are_replaced_by_the_confirmed_ones(detector):
    """At some rolls the detector's keypoints keep a plausible eye line yet sit beside the face."""
    image, truth = _turned(0)
    found = detector(image)
    face = _largest(found)
    box, keypoints = found.boxes[face : face + 1], found.keypoints[face : face + 1]
    eyes = float(np.linalg.norm(keypoints[0, 1] - keypoints[0, 0]))
    shifted = keypoints + np.float32([eyes, 0.0])  # the same shape, one eye distance to the side
    fixed = RollChecker(detector)(image, [1], box, shifted)
    assert np.abs(fixed - keypoints).max() < 0.25 * eyes  # back on the face
    assert not np.array_equal(fixed, shifted)
