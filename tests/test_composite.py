"""Compositing: feathered masks, ROI alpha blending and pasting aligned crops back."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamanon.composite import blend, clip_box, ellipse_mask, feather, paste_aligned


def _disk(size: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2.0
    return ((xx - centre) ** 2 + (yy - centre) ** 2 <= radius**2).astype(np.float32)


def _max_step(image: np.ndarray) -> int:
    """Largest absolute difference between horizontally or vertically neighbouring pixels."""
    img = image.astype(np.int32)
    return int(max(np.abs(np.diff(img, axis=0)).max(), np.abs(np.diff(img, axis=1)).max()))


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]], dtype=np.float64
    )


# ---------------------------------------------------------------------------------------------
# feather and ellipse masks


def test_feather_stays_inside_the_region_and_reaches_one():
    mask = _disk(101, 40)
    alpha = feather(mask, 10)
    assert alpha.dtype == np.float32 and alpha.shape == mask.shape
    assert np.all(alpha[mask == 0] == 0)  # nothing leaks outside the region
    region = mask.astype(np.uint8)
    eroded_2 = cv2.erode(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    border = (region == 1) & (eroded_2 == 0)  # the region's outermost 2 px
    assert alpha[border].max() < 0.1  # close to 0 at the border...
    deep = cv2.erode(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (25, 25))) == 1
    assert np.all(alpha[deep] == 1.0)  # ...and exactly 1 a feather width inside
    profile = alpha[50, 50:]  # centre to edge: monotone non-increasing
    assert np.all(np.diff(profile) <= 1e-6)


def test_feather_at_the_array_edge():
    mask = np.ones((40, 40), np.float32)
    assert feather(mask, 8)[0, 20] == 0 and feather(mask, 8)[20, 20] == 1  # crops: edge is a border
    assert np.all(feather(mask, 8, outside_border=False) == 1)  # frames: edge is not a border
    hard = feather(_disk(41, 15), 0)
    assert set(np.unique(hard)) == {0.0, 1.0}


def test_ellipse_mask_geometry():
    box = (20, 10, 80, 110)  # 60 x 100
    hard = ellipse_mask((120, 100), box)
    assert hard[60, 50] == 1 and hard[12, 22] == 0 and hard[60, 18] == 0  # centre, box corner, outside
    assert abs(hard.sum() - np.pi * 30 * 50) < 0.02 * np.pi * 30 * 50  # area of the ellipse
    soft = ellipse_mask((120, 100), box, feather_px=10)
    assert np.all(soft <= hard)  # the soft edge is inside the ellipse
    assert soft[60, 50] == 1 and 0 < soft[60, 25] < 1  # 5 px in from the left side: in the ramp
    assert soft[60, 41] == 1  # more than 10 px in: opaque
    # An ellipse cut by the array edge stays opaque up to that edge (a face at the frame border).
    cut = ellipse_mask((60, 60), (-40, 10, 40, 50), feather_px=6)
    assert cut[30, 0] == 1


def _ellipse_as_written(shape, box, feather_px):
    """ellipse_mask's docstring formula as plain float32 NumPy expressions."""
    height, width = shape
    x1, y1, x2, y2 = box
    cx, cy, a, b = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    u = ((np.arange(width, dtype=np.float32) + 0.5 - cx) / a)[None, :]
    v = ((np.arange(height, dtype=np.float32) + 0.5 - cy) / b)[:, None]
    r = np.sqrt(u * u + v * v)
    grad = np.sqrt((u / a) ** 2 + (v / b) ** 2) / np.maximum(r, 1e-6)
    t = np.clip((1.0 - r) / np.maximum(grad, 1e-12) / np.float32(feather_px), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def test_ellipse_mask_equals_its_formula_bit_for_bit():
    """It is evaluated in place for speed (per hidden face and frame): the same values."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        shape = tuple(int(v) for v in rng.integers(1, 200, 2))
        x, y = (float(v) for v in rng.uniform(-100, 200, 2))
        box = (x, y, x + float(rng.uniform(1, 300)), y + float(rng.uniform(1, 300)))
        feather_px = float(rng.choice([0.5, 6.0, 40.0]))
        got = ellipse_mask(shape, box, feather_px=feather_px)
        assert got.dtype == np.float32 and np.array_equal(got, _ellipse_as_written(shape, box, feather_px))


def test_clip_box():
    assert clip_box((-3.5, 2.2, 10.1, 500), (100, 50, 3)) == (0, 2, 11, 100)
    assert clip_box((60, 0, 70, 10), (100, 50)) is None


# ---------------------------------------------------------------------------------------------
# blend


def test_blend_keeps_pixels_outside_the_alpha_support_and_sets_the_centre():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    before = frame.copy()
    box = (30, 20, 110, 100)
    replacement = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    alpha = ellipse_mask((80, 80), (0, 0, 80, 80), feather_px=12)
    blend(frame, replacement, alpha, box=box)

    full_alpha = np.zeros(frame.shape[:2], np.float32)
    full_alpha[20:100, 30:110] = alpha
    outside = full_alpha == 0
    assert np.array_equal(frame[outside], before[outside])
    centre = alpha == 1
    assert np.array_equal(frame[20:100, 30:110][centre], replacement[centre])
    soft = (alpha > 0) & (alpha < 1)
    expected = before[20:100, 30:110][soft] * (1 - alpha[soft, None]) + replacement[soft] * alpha[soft, None]
    assert np.abs(frame[20:100, 30:110][soft] - expected).max() <= 0.51


def test_blend_is_exact_at_alpha_zero_and_one_for_every_value():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    for alpha_value, expected in ((0.0, values), (1.0, 255 - values)):
        frame = values.copy()
        blend(frame, 255 - values, np.full((16, 16), alpha_value, np.float32))
        assert np.array_equal(frame, expected)


def test_blend_accepts_frame_sized_inputs():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)
    replacement = rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)
    alpha = rng.random((60, 70), dtype=np.float32)
    box = (10, 5, 50, 40)
    roi_sized, frame_sized, whole = frame.copy(), frame.copy(), frame.copy()
    blend(roi_sized, replacement[5:40, 10:50], alpha[5:40, 10:50], box=box)
    blend(frame_sized, replacement, alpha, box=box)
    assert np.array_equal(roi_sized, frame_sized)
    alpha_box = np.zeros_like(alpha)
    alpha_box[5:40, 10:50] = alpha[5:40, 10:50]
    blend(whole, replacement, alpha_box)  # box=None: the whole frame
    assert np.array_equal(whole, roi_sized)
    with pytest.raises(ValueError, match="inside"):
        blend(frame, replacement, alpha, box=(0, 0, 71, 10))
    with pytest.raises(ValueError, match="neither"):
        blend(frame, replacement[:7, :7], alpha, box=box)


def test_feathered_blend_has_no_seam():
    """Flat grey frame, flat white replacement: the boundary ramps instead of stepping."""
    frame = np.full((160, 160, 3), 128, np.uint8)
    replacement = np.full((160, 160, 3), 255, np.uint8)
    width = 24.0
    hard = frame.copy()
    blend(hard, replacement, _disk(160, 60))
    assert _max_step(hard) == 127  # an unfeathered paste is a seam
    blend(frame, replacement, feather(_disk(160, 60), width))
    source_step = max(_max_step(np.full((4, 4), 128)), _max_step(replacement))  # 0: both are flat
    # smoothstep's steepest slope is 1.5 / width, so the contrast 127 spreads to ~8 levels a pixel.
    tolerance = int(np.ceil(127 * 1.5 / width)) + 1
    assert _max_step(frame) <= source_step + tolerance
    assert frame[80, 80, 0] == 255 and frame[0, 0, 0] == 128


# ---------------------------------------------------------------------------------------------
# paste_aligned


def test_paste_aligned_translation_puts_the_crop_where_expected():
    rng = np.random.default_rng(2)
    frame = np.zeros((100, 120, 3), np.uint8)
    crop = rng.integers(1, 256, (32, 32, 3), dtype=np.uint8)
    x0, y0 = 50, 30
    matrix = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])  # frame -> crop
    paste_aligned(frame, crop, matrix, np.ones((32, 32), np.float32))
    assert np.array_equal(frame[y0 : y0 + 32, x0 : x0 + 32], crop)
    rest = np.ones(frame.shape[:2], bool)
    rest[y0 : y0 + 32, x0 : x0 + 32] = False
    assert not frame[rest].any()


def test_paste_aligned_scaled_crop_covers_the_scaled_region():
    frame = np.zeros((200, 200, 3), np.uint8)
    crop = np.full((64, 64, 3), 200, np.uint8)
    # The face is twice the crop's size in the frame: frame -> crop scales by 0.5.
    matrix = np.array([[0.5, 0.0, -20.0], [0.0, 0.5, -10.0]])  # crop (0, 0) is frame (40, 20)
    paste_aligned(frame, crop, matrix, np.ones((64, 64), np.float32))
    assert np.all(frame[22:144, 42:164] == 200)
    assert not frame[:19].any() and not frame[:, :39].any() and not frame[148:].any() and not frame[:, 168:].any()


def test_paste_aligned_equals_a_full_frame_warp():
    """Restricting the work to the face's bounding box changes nothing."""
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    alpha = feather(ellipse_mask((96, 96), (12, 6, 84, 90)), 8)
    matrix = _similarity(0.7, 25.0, -90.0, -20.0)  # frame -> crop: rotated, face larger in the frame
    pasted = frame.copy()
    paste_aligned(pasted, crop, matrix, alpha)

    size = (frame.shape[1], frame.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(crop, matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    warped_alpha = cv2.warpAffine(alpha, matrix, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    reference = frame.copy()
    blend(reference, warped, warped_alpha)
    assert warped_alpha.max() == pytest.approx(1.0) and (warped_alpha > 0).sum() > 5000
    # cv2's fixed-point bilinear weights depend on the offset; allow one level of rounding.
    assert np.abs(pasted.astype(int) - reference.astype(int)).max() <= 1
    untouched = warped_alpha == 0
    assert np.array_equal(pasted[untouched], frame[untouched])


def test_paste_aligned_partly_outside_the_frame():
    frame = np.zeros((50, 50, 3), np.uint8)
    crop = np.full((40, 40, 3), 90, np.uint8)
    matrix = np.array([[1.0, 0.0, 20.0], [0.0, 1.0, 25.0]])  # crop (0, 0) is frame (-20, -25)
    paste_aligned(frame, crop, matrix, np.ones((40, 40), np.float32))
    assert np.all(frame[:15, :20] == 90) and not frame[15:].any() and not frame[:, 20:].any()
    # Entirely outside, or an empty alpha: nothing happens.
    paste_aligned(frame, crop, np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 0.0]]), np.ones((40, 40), np.float32))
    paste_aligned(frame, crop, np.eye(2, 3), np.zeros((40, 40), np.float32))
    assert np.all(frame[:15, :20] == 90) and not frame[15:].any()
