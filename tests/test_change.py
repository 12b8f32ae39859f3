"""Full passes between local ones when the picture changed where a face could come in (--detect-every N)."""

from __future__ import annotations

import av
import cv2
import numpy as np
from conftest import shared_path

from streamanon import Anonymizer, load_config
from streamanon.faces.change import CELL, ChangeWatch
from streamanon.types import Frame


def _scene(rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), (0, 0), 8)


def test_the_watch_asks_for_a_full_pass_at_the_edge_and_at_a_cut_not_for_a_moving_face():
    rng = np.random.default_rng(0)
    still = _scene(rng)
    face = np.array([[250.0, 100.0, 390.0, 260.0]])
    watch = ChangeWatch()
    assert watch.needs_full_pass(still, face)  # the first frame: nothing to compare with
    noisy = np.clip(still + rng.normal(0, 3, still.shape), 0, 255).astype(np.uint8)
    assert not watch.needs_full_pass(noisy, face)  # sensor noise
    moved = noisy.copy()
    moved[120:240, 270:370] = 255 - moved[120:240, 270:370]  # the tracked face changes a lot
    assert not watch.needs_full_pass(moved, face)
    entering = moved.copy()
    entering[100:200, -2 * CELL:] = 255  # something comes in at the right edge
    assert watch.needs_full_pass(entering, face)
    assert watch.needs_full_pass(_scene(rng), face)  # a cut to another view
    watch.reset()
    assert watch.needs_full_pass(still, face)


def _talking_face(size: int) -> np.ndarray:
    with av.open(str(shared_path("videos/talking_512_katiehill.mp4"))) as talk:
        return cv2.resize(next(talk.decode(video=0)).to_ndarray(format="rgb24"), (size, size))


def test_a_cut_to_a_known_face_at_a_new_place_is_hidden_at_once_with_detect_every():
    """A privacy audit: the same face jumping from one side to the other (a cut to another camera)
    showed in full for a frame with --detect-every 3, the local pass looking only where it was."""
    background = _scene(np.random.default_rng(1))
    face = _talking_face(256)
    frames = []
    for index in range(12):
        frame = background.copy()
        x = 0 if index < 7 else 384
        frame[52:308, x:x + 256] = face
        frames.append(frame)
    for watch in (True, False):
        config = load_config(overrides={"detect.every": 3, "detect.watch_changes": watch})
        anonymizer = Anonymizer(config)
        outs = [anonymizer.process_frame(Frame(f, i, i, None))[0] for i, f in enumerate(frames)]
        # the face's middle (eyes to mouth) at its new place, on the frame of the jump
        change = np.abs(outs[7][130:260, 450:575].astype(int) - frames[7][130:260, 450:575]).mean()
        assert (change > 10) == watch, (watch, change)
