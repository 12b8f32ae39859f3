"""Reduced-resolution shading (photometric/resample.py): shrink, grow and the filter around them."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from conftest import shared_path

from streamanon.config import PhotometricConfig
from streamanon.errors import UserError
from streamanon.photometric import reference
from streamanon.photometric.resample import (
    grow,
    reduced_shading,
    shrink,
    small_filter_params,
)


@pytest.fixture(scope="module")
def photo_faces() -> np.ndarray:
    """Twelve real face crops (UTKFace) at 128 px, RGB uint8."""
    files = sorted(shared_path("faces/utkface").glob("*.jpg"))[:12]
    return np.stack([cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (128, 128)) for f in files])


def test_shrink_averages_blocks_and_pads_ragged_edges():
    values = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    small = shrink(values, 2, np)
    assert small.shape == (2, 3, 4) and small.dtype == np.float32
    assert small[0, 0, 0] == pytest.approx(values[0, :2, :2].mean())
    # The last column block repeats column 6: its mean is the mean of that column's two rows.
    assert small[1, 1, 3] == pytest.approx(values[1, 2:4, 6].mean())
    assert small[0, 2, 3] == pytest.approx(values[0, 4, 6])


def test_grow_is_exact_on_constants_and_linear_ramps():
    flat = np.full((1, 8, 8), 0.4, np.float32)
    np.testing.assert_allclose(grow(flat, 2, 16, 16, np), 0.4, atol=1e-7)
    # A ramp shrinks to the ramp at block centres; bilinear growth restores it between the first
    # and last centres (outside them the edge value is held).
    x = np.arange(32, dtype=np.float32)
    ramp = np.broadcast_to(0.01 * x[None, None, :] + 0.02 * x[None, :, None], (1, 32, 32)).copy()
    back = grow(shrink(ramp, 4, np), 4, 32, 32, np)
    np.testing.assert_allclose(back[:, 2:30, 2:30], ramp[:, 2:30, 2:30], atol=1e-5)
    assert back[0, 0, 0] == pytest.approx(0.045, abs=1e-6)  # held at the first centre (1.5, 1.5)


def test_small_filter_keeps_an_odd_window_and_scales_sigma():
    assert small_filter_params(31, 12.0, 1) == (31, 12.0)
    assert small_filter_params(31, 12.0, 2) == (
        17,
        6.0,
    )  # radius 15 / 2 rounds half up to 8
    assert small_filter_params(31, 12.0, 4) == (9, 3.0)
    assert small_filter_params(5, 2.0, 4) == (3, 0.5)


def test_reduced_shading_is_close_to_the_full_filter_on_faces(photo_faces):
    faces = photo_faces
    _, full = reference.shading_albedo(faces, 31, 1.0, 12.0, downsample=1)
    _, half = reference.shading_albedo(faces, 31, 1.0, 12.0, downsample=2)
    assert half.shape == full.shape
    error = np.abs(half - full)
    assert error.mean() < 0.006 and np.percentile(error, 99) < 0.03
    # And it is a real shortcut, not the same call: the filter ran on a smaller stack.
    calls = []

    def spy(stack, *params):
        calls.append(stack.shape)
        return stack

    reduced_shading(np.zeros((2, 96, 96), np.float32), 2, spy, 31, 1.0, 12.0, np)
    assert calls == [(2, 48, 48)]


def test_postprocess_output_barely_moves(photo_faces):
    anon, orig = photo_faces[::-1].copy(), photo_faces
    mask = np.zeros(anon.shape[:3], np.float32)
    mask[:, 16:-16, 16:-16] = 1.0
    cfg = PhotometricConfig()
    assert cfg.shading_downsample == 2
    exact = reference.postprocess(anon, orig, mask, dataclasses.replace(cfg, shading_downsample=1))
    fast = reference.postprocess(anon, orig, mask, cfg)
    diff = np.abs(exact.astype(int) - fast.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4
    assert np.array_equal(fast[:, :16], anon[:, :16])  # outside the mask: untouched


@pytest.mark.parametrize("factor", [0, 3, 8])
def test_unsupported_factors_are_refused(factor):
    image = np.zeros((1, 32, 32, 3), np.uint8)
    mask = np.ones((1, 32, 32), np.float32)
    with pytest.raises(UserError, match="shading_downsample"):
        reference.postprocess(image, image, mask, PhotometricConfig(shading_downsample=factor))
    with pytest.raises(UserError, match="downsample"):
        reference.shading_albedo(image, 31, 1.0, 12.0, downsample=factor)
