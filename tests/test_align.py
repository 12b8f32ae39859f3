"""Alignment to the canonical crop and back (ground-truth landmarks: no model needed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import shared_path

from streamanon.errors import UserError
from streamanon.faces.align import (
    ALIGN_POINTS,
    MIRROR_68,
    TEMPLATE_68,
    align_face,
    crop_footprint,
    face_mask,
    face_region_points,
    points_to_crop,
    points_to_frame,
    similarity_transform,
    template,
    warp_image,
    warp_to_frame,
)
from streamanon.faces.landmarks import read_pts
from streamanon.types import AlignedFace


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, np.ndarray]]:
    """The first 20 HELEN test photos with their ground-truth landmarks."""
    out = []
    for pts in sorted(shared_path("landmarks68/helen_test").glob("*.pts"))[:20]:
        image = cv2.cvtColor(cv2.imread(str(pts.with_suffix(".jpg"))), cv2.COLOR_BGR2RGB)
        out.append((image, read_pts(pts)))
    return out


def random_similarity(rng: np.random.Generator) -> np.ndarray:
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 5.0)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, rng.uniform(-100, 100)], [s, c, rng.uniform(-100, 100)]])


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (68, 2))
    for _ in range(5):
        truth = random_similarity(rng)
        dst = points_to_crop(src, truth)
        np.testing.assert_allclose(similarity_transform(src, dst), truth, atol=1e-8)
        # Least squares: noise moves the estimate only a little.
        noisy = similarity_transform(src, dst + rng.normal(0, 0.5, dst.shape))
        assert np.abs(points_to_crop(src, noisy) - dst).max() < 1.0


def test_similarity_transform_never_reflects():
    rng = np.random.default_rng(1)
    src = rng.uniform(-1, 1, (20, 2))
    mirrored = src * [-1.0, 1.0]
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0
    a, b = matrix[0, 0], matrix[1, 0]
    np.testing.assert_allclose(matrix[:, :2], [[a, -b], [b, a]], atol=1e-12)  # rotation * scale
    with pytest.raises(UserError):
        similarity_transform(np.zeros((3, 2)), np.ones((3, 2)))
    with pytest.raises(UserError):
        similarity_transform(src, src[:5])


def test_template_is_symmetric_upright_and_centred():
    assert TEMPLATE_68.shape == (68, 2) and TEMPLATE_68.dtype == np.float32
    mirrored = TEMPLATE_68[MIRROR_68] * [-1, 1] + [1, 0]
    np.testing.assert_allclose(mirrored, TEMPLATE_68, atol=2e-4)
    region = face_region_points(TEMPLATE_68)
    lo, hi = region.min(0), region.max(0)
    assert (hi - lo).max() == pytest.approx(0.6, abs=1e-3)  # face region: central 60 %
    np.testing.assert_allclose((lo + hi) / 2, [0.5, 0.5], atol=1e-3)
    assert TEMPLATE_68[8, 1] > TEMPLATE_68[30, 1] > TEMPLATE_68[27, 1]  # chin below nose below brows


def test_align_then_back_reproduces_landmarks(faces):
    for image, landmarks in faces:
        aligned = align_face(image, landmarks, size=128, track_id=7)
        assert isinstance(aligned, AlignedFace) and aligned.track_id == 7
        assert aligned.image.shape == (128, 128, 3) and aligned.image.dtype == np.uint8
        assert aligned.matrix.shape == (2, 3) and aligned.landmarks.dtype == np.float32
        back = points_to_frame(aligned.landmarks, aligned.matrix)
        assert np.abs(back - landmarks).max() < 0.5


def test_warp_to_frame_puts_crop_pixels_back_on_the_landmarks(faces):
    # Draw a small blob at each crop landmark, warp the crop image back to the frame and
    # find each blob's centroid there: it must sit on the original frame landmark.
    image, landmarks = faces[0]
    aligned = align_face(image, landmarks, size=256)
    picks = [30, 36, 45, 48, 54]  # nose tip, eye corners, mouth corners
    roi = crop_footprint(aligned.matrix, aligned.size, image.shape)
    for i in picks:
        ys, xs = np.mgrid[0 : aligned.size, 0 : aligned.size]
        blob = np.exp(-((xs - aligned.landmarks[i, 0]) ** 2 + (ys - aligned.landmarks[i, 1]) ** 2) / (2 * 3.0**2))
        frame_blob = warp_to_frame(blob.astype(np.float32), aligned.matrix, image.shape, roi=roi)
        fys, fxs = np.mgrid[roi[1] : roi[3], roi[0] : roi[2]]
        total = frame_blob.sum()
        centroid = np.array([(frame_blob * fxs).sum() / total, (frame_blob * fys).sum() / total])
        assert np.linalg.norm(centroid - landmarks[i]) < 0.5, (i, centroid, landmarks[i])
    # The ROI variant is a window of the full-frame warp (up to OpenCV's fixed-point
    # sub-pixel steps, which depend on the origin).
    full = warp_to_frame(aligned.mask, aligned.matrix, image.shape)
    part = warp_to_frame(aligned.mask, aligned.matrix, image.shape, roi=roi)
    np.testing.assert_allclose(full[roi[1] : roi[3], roi[0] : roi[2]], part, atol=1e-3)
    assert full.sum() == pytest.approx(part.sum(), rel=1e-4)  # nothing of the crop lies outside the ROI


def test_aligned_landmarks_close_to_template(faces):
    size = 128
    canon = template(size)
    errors = []
    for image, landmarks in faces:
        aligned = align_face(image, landmarks, size=size)
        errors.append(np.linalg.norm(aligned.landmarks - canon, axis=1)[ALIGN_POINTS].mean())
    # Measured: 1.8 px mean, 3.2 px worst over these faces (expression and pose differ).
    assert max(errors) < 0.04 * size
    assert np.mean(errors) < 0.025 * size


def test_mask_covers_all_landmarks_and_stays_inside(faces):
    for image, landmarks in faces:
        aligned = align_face(image, landmarks, size=128)
        mask = aligned.mask
        assert mask.shape == (128, 128) and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        xy = np.clip(np.round(aligned.landmarks).astype(int), 0, 127)
        assert (mask[xy[:, 1], xy[:, 0]] == 1).all()
        assert 0.2 < mask.mean() < 0.5  # a face region, not the whole crop
        assert mask[:8].sum() == 0 and mask[:, :8].sum() == 0  # context stays untouched
        # The forehead is included: the mask reaches well above the brows.
        brow_top = aligned.landmarks[17:27, 1].min()
        assert np.nonzero(mask.any(axis=1))[0].min() < brow_top - 0.1 * 128


def test_face_mask_direct():
    mask = face_mask(template(64), 64)
    assert mask.shape == (64, 64) and mask[32, 32] == 1 and mask[0, 0] == 0


def test_zoom_changes_the_face_size(faces):
    image, landmarks = faces[0]
    wide = align_face(image, landmarks, size=128, zoom=0.8)
    tight = align_face(image, landmarks, size=128, zoom=1.25)
    spread = lambda a: np.ptp(a.landmarks[ALIGN_POINTS], axis=0).mean()  # noqa: E731
    assert spread(tight) / spread(wide) == pytest.approx(1.25 / 0.8, rel=1e-3)


def test_warp_image_matches_geometry_when_shrinking():
    # A linear ramp is reproduced exactly by both linear interpolation and area
    # averaging, so the crop must equal the ramp at the mapped pixel centres: this pins
    # the pixel-centre convention of the anti-aliased (pre-shrunk) path.
    h, w = 600, 800
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = 0.3 * xs + 0.2 * ys
    rng = np.random.default_rng(3)
    for scale in (0.9, 0.3):  # direct warp, then the pre-shrink path
        angle = rng.uniform(-0.5, 0.5)
        c, s = scale * np.cos(angle), scale * np.sin(angle)
        matrix = np.array([[c, -s, 0.0], [s, c, 0.0]])
        matrix[:, 2] = 32 - matrix[:, :2] @ [400, 300]  # frame (400, 300) -> crop centre
        crop = warp_image(ramp, matrix, 64)
        cys, cxs = np.mgrid[0:64, 0:64]
        src = points_to_frame(np.stack([cxs, cys], -1).reshape(-1, 2), matrix)
        expected = (0.3 * src[:, 0] + 0.2 * src[:, 1]).reshape(64, 64)
        assert np.abs(crop - expected).max() < 0.05, scale


def test_bad_landmarks_are_user_errors(faces):
    image, landmarks = faces[0]
    with pytest.raises(UserError):
        align_face(image, landmarks[:5])
    bad = landmarks.copy()
    bad[3] = np.nan
    with pytest.raises(UserError):
        align_face(image, bad)


def test_faces_aligned_on_the_device_match_the_host_warp(faces):
    """align_faces(frame=tensor): the crops sampled on the frame's device (box_sampling) are the
    host warp's within filter differences; everything else in the record is the host path's."""
    import torch

    from streamanon.faces.align import align_faces

    # Mean level differences measured 2.9 / 1.7 / 1.0: the host area-resizes then interpolates,
    # the device averages one square of the same spread (HELEN faces are shrunk at every size).
    for size, bound in ((64, 4.0), (128, 2.5), (256, 1.5)):
        diffs = []
        for image, truth in faces[:8]:
            (host,) = align_faces(image, [truth], size, [3])
            (device,) = align_faces(image, [truth], size, [3], frame=torch.from_numpy(image))
            assert device.image.shape == host.image.shape and device.image.dtype == np.uint8
            np.testing.assert_array_equal(device.matrix, host.matrix)
            np.testing.assert_array_equal(device.landmarks, host.landmarks)
            np.testing.assert_array_equal(device.mask, host.mask)
            assert device.track_id == 3
            diffs.append(np.abs(device.image.astype(int) - host.image).mean())
        assert np.mean(diffs) < bound, (size, diffs)


def test_warp_on_device_is_bilinear_when_magnifying_and_replicates_edges():
    import torch

    from streamanon.faces.box_sampling import warp_on_device

    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8), (0, 0), 1.2)
    to_crop = np.array([[2.0, 0.3, -40.0], [-0.3, 2.0, -20.0]])  # magnifies ~2x, turned, partly off the frame
    expected = cv2.warpAffine(image, to_crop, (100, 100), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    got = warp_on_device(torch.from_numpy(image), torch.from_numpy(cv2.invertAffineTransform(to_crop))[None], 100)
    assert got.shape == (1, 100, 100, 3) and got.dtype == torch.uint8
    assert np.abs(got[0].numpy().astype(int) - expected).max() <= 1  # cv2 interpolates in fixed point
