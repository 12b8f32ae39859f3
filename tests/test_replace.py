"""Baseline hiding modes: the whole face box is replaced, nothing far from it is touched."""

from __future__ import annotations

import numpy as np
import pytest

from streamanon.config import ReplaceConfig
from streamanon.replace import blurred, hide_ellipse, hide_face, pixelated

BOXES = [
    (100.0, 80.0, 180.0, 190.0),  # inside the frame
    (-30.0, -20.0, 40.0, 60.0),  # cut by the top-left corner
    (600.0, 300.0, 700.0, 420.0),  # cut by the bottom-right corner
    (5.0, 5.0, 635.0, 355.0),  # filling the frame
    (300.0, 150.0, 312.5, 163.0),  # tiny face
]


@pytest.mark.parametrize("box", BOXES)
def test_solid_replaces_every_pixel_of_the_face_box(box):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    original = frame.copy()
    cfg = ReplaceConfig(solid_color=(7, 200, 31))
    hide_face(frame, np.array(box, np.float32), "solid", cfg)
    x1, y1, x2, y2 = (int(np.floor(max(box[0], 0))), int(np.floor(max(box[1], 0))),
                      int(np.ceil(min(box[2], 640))), int(np.ceil(min(box[3], 360))))
    assert np.all(frame[y1:y2, x1:x2] == (7, 200, 31)), "a pixel of the face box stayed visible"
    # Outside the ellipse's bounding box nothing changes, bit for bit.
    ex1, ey1, ex2, ey2 = hide_ellipse(np.array(box, np.float32), cfg.margin)
    outside = np.ones((360, 640), bool)
    outside[max(0, int(ey1)) : max(0, int(np.ceil(ey2))), max(0, int(ex1)) : max(0, int(np.ceil(ex2)))] = False
    assert np.array_equal(frame[outside], original[outside])


@pytest.mark.parametrize("mode", ["blur", "pixelate"])
def test_blur_and_pixelate_destroy_detail(mode):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)  # pure detail: worst case for hiding
    box = np.array([50, 50, 150, 150], np.float32)
    hide_face(frame, box, mode, ReplaceConfig())
    face = frame[50:150, 50:150].astype(np.float32)
    # Random noise has std ~74; after hiding only coarse structure may remain.
    high_pass = face[1:, 1:] - face[:-1, :-1]
    if mode == "blur":
        assert np.abs(high_pass).mean() < 3.0
    else:
        assert len(np.unique(face.reshape(-1, 3), axis=0)) <= 8 * 8 + 16


def test_blurred_and_pixelated_keep_shape_on_tiny_patches():
    patch = np.full((3, 2, 3), 9, np.uint8)
    assert blurred(patch).shape == patch.shape
    assert pixelated(patch, 8).shape == patch.shape


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        hide_face(np.zeros((10, 10, 3), np.uint8), np.array([1, 1, 5, 5], np.float32), "generate", ReplaceConfig())
