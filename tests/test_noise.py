"""Sensor-noise matching (streamanon/noise.py) and its torch twin (streamanon/noise_torch.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamanon import noise
from streamanon.composite import paste_aligned


def _ramp(height: int = 240, width: int = 260) -> np.ndarray:
    """A clean float image: a diagonal ramp with a soft blob (no noise, no edges)."""
    y, x = np.mgrid[:height, :width].astype(np.float32)
    blob = 40 * np.exp(-((x - width / 2) ** 2 + (y - height / 2) ** 2) / (2 * 50.0**2))
    base = 60 + 0.3 * x + 0.2 * y + blob
    return np.stack([base, base * 0.9, base * 0.8], axis=-1)


def _noisy(clean: np.ndarray, white: float, smooth: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    added = rng.normal(0, white, clean.shape)
    if smooth:
        blurred = cv2.GaussianBlur(rng.normal(0, 1, clean.shape), (0, 0), 1.2)
        added += blurred / blurred.std() * smooth
    return np.clip(np.rint(clean + added), 0, 255).astype(np.uint8)


def _region(height: int = 240, width: int = 260) -> np.ndarray:
    inside = np.zeros((height, width), bool)
    inside[20:-20, 30:-30] = True
    return inside


def test_levels_read_gaussian_noise_and_ignore_ramps():
    clean, inside = _ramp(), _region()
    levels = noise.noise_levels(_noisy(clean, 4.0), inside)
    assert np.allclose(levels[:3], 4.0, rtol=0.05)  # each channel's
    assert levels[3] == pytest.approx(4.0 / np.sqrt(3.0), rel=0.05)  # the mean of three independent ones
    grey = np.clip(np.rint(clean + np.random.default_rng(1).normal(0, 4.0, clean.shape[:2])[..., None]), 0, 255)
    assert np.allclose(noise.noise_levels(grey, inside), 4.0, rtol=0.05)  # one grey noise: the mean keeps it
    assert noise.noise_levels(clean, inside).max() < 0.05  # planes, ramps and a soft blob read as clean
    tiny = np.zeros_like(inside)
    tiny[:5, :5] = True
    assert np.isnan(noise.noise_levels(clean, tiny)).all()  # too few pixels to say


def test_covariance_parts_tell_grey_from_colour_noise():
    grey, colour = noise.covariance_parts(np.array([4.0, 4.0, 4.0, 4.0]))
    assert grey == pytest.approx(16.0) and np.allclose(colour, 0.0)
    grey, colour = noise.covariance_parts(np.array([4.0, 4.0, 4.0, 4.0 / np.sqrt(3.0)]))
    assert grey == pytest.approx(0.0, abs=1e-9) and np.allclose(colour, 16.0)
    grey, colour = noise.covariance_parts(np.array([3.0, np.nan, 2.0, 5.0]))  # inconsistent: bounded, unknown = 0
    assert grey == 0.0 and np.allclose(colour, [9.0, 0.0, 4.0])


def test_grouped_median_interpolates_within_a_bin():
    values = np.random.default_rng(3).uniform(0, 40, 50_001).astype(np.float32)
    assert noise.grouped_median(values[None]) == pytest.approx(np.median(values), abs=noise.BIN / 4)
    big = np.full((1, 100), 10_000.0, np.float32)  # past the histogram: counted in its last bin
    assert noise.grouped_median(big) == pytest.approx(noise.BINS * noise.BIN, abs=noise.BIN)


def test_the_tile_reads_one_on_every_channel_and_is_built_once():
    tile = noise.noise_tile()
    assert tile.shape == (noise.TILE, noise.TILE, 4) and tile.dtype == np.float32
    levels = noise.channel_sigmas(tile, np.ones(tile.shape[:2], bool))
    assert np.allclose(levels, 1.0, atol=1e-3) and tile.std() == pytest.approx(1.0, abs=0.02)
    assert noise.noise_tile() is tile


@pytest.mark.parametrize("white, grey, smooth", [(5.0, 0.0, 0.0), (0.0, 5.0, 0.0), (2.0, 4.0, 0.0), (2.0, 0.0, 3.0)])
def test_a_clean_face_gets_the_frames_noise_and_never_more(white, grey, smooth):
    clean, inside = _ramp(), _region()
    frame = _noisy(clean, white, smooth)
    if grey:  # luma noise: the same in every channel
        common = np.random.default_rng(5).normal(0, grey, clean.shape[:2])[..., None]
        frame = np.clip(np.rint(frame + common), 0, 255).astype(np.uint8)
    face = np.clip(np.rint(clean + 5), 0, 255).astype(np.uint8)
    shown = noise.noisy_like(face, frame, inside.astype(np.float32), seed=11)
    target, reached = noise.noise_levels(frame, inside), noise.noise_levels(shown, inside)
    assert np.allclose(reached, target, rtol=0.1, atol=0.1)
    added = (shown.astype(float) - face)[inside]
    real = (frame.astype(float) - np.clip(np.rint(clean), 0, 255))[inside]
    assert (added.std(axis=0) <= 1.1 * real.std(axis=0)).all()  # correlated noise gets less than it has
    if not smooth:  # white noise: the same deviations and the same correlation between channels
        assert np.allclose(added.std(axis=0), real.std(axis=0), rtol=0.1)
        assert np.allclose(np.corrcoef(added.T), np.corrcoef(real.T), atol=0.06)
    assert abs(float(shown.astype(float).mean() - face.astype(float).mean())) < 0.2  # zero-mean: no tint


def test_a_clean_frame_or_an_already_noisy_face_gets_nothing():
    clean, inside = _ramp(), _region()
    face = np.clip(np.rint(clean), 0, 255).astype(np.uint8)
    alpha = inside.astype(np.float32)
    assert noise.noisy_like(face, face, alpha, seed=1) is face  # a clean frame: below noise.CLEAN
    grainy = _noisy(clean, 6.0, seed=1)  # the face is the noisier: at most a trace of grey noise, where
    shown = noise.noisy_like(grainy, _noisy(clean, 3.0, seed=2), alpha, seed=1)  # estimates scatter
    assert np.abs(shown.astype(int) - grainy).max() <= 2 and np.abs(shown.astype(int) - grainy).mean() < 0.3


def test_noise_follows_its_seed_and_only_the_opaque_part_is_measured():
    clean, inside = _ramp(), _region()
    frame = _noisy(clean, 4.0)
    face = np.clip(np.rint(clean), 0, 255).astype(np.uint8)
    alpha = inside.astype(np.float32)
    first, again = noise.noisy_like(face, frame, alpha, 5), noise.noisy_like(face, frame, alpha, 5)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, noise.noisy_like(face, frame, alpha, 6))
    # Noise outside the opaque part (where the frame shows through the soft edge) is not measured.
    noisier_outside = frame.copy()
    noisier_outside[~inside] = _noisy(clean, 20.0, seed=9)[~inside]
    assert np.array_equal(noise.noisy_like(face, noisier_outside, alpha, 5), first)


def test_seeds_differ_per_frame_and_track_and_windows_wrap_past_the_tile():
    seeds = {noise.noise_seed(frame, track) for frame in range(20) for track in range(5)}
    assert len(seeds) == 100 and noise.noise_seed(3, 1) == noise.noise_seed(3, 1)
    assert noise.noise_seed(3, 1, base=1) != noise.noise_seed(3, 1)
    size = noise.TILE + 100
    window = noise.tile_window(size, size, seed=4)
    assert window.shape == (size, size, 4)
    assert np.array_equal(window[noise.TILE :], window[:100])  # periodic, no seam where it repeats
    small = noise.tile_window(50, 60, seed=4)
    assert np.shares_memory(small, noise.noise_tile())  # inside the tile: a view, no copy


def test_paste_with_noise_leaves_pixels_outside_the_face_alone():
    rng = np.random.default_rng(0)
    frame = _noisy(_ramp(200, 200), 5.0)
    crop = cv2.GaussianBlur(rng.integers(80, 180, (64, 64, 3), dtype=np.uint8), (0, 0), 3)
    alpha = np.zeros((64, 64), np.float32)
    cv2.circle(alpha, (32, 32), 26, 1.0, -1)
    matrix = np.array([[0.5, 0.0, -18.0], [0.0, 0.5, -18.0]])  # the crop at 2x, around (100, 100)
    plain, noisy = frame.copy(), frame.copy()
    paste_aligned(plain, crop, matrix, alpha)
    paste_aligned(noisy, crop, matrix, alpha, noise_seed=3)
    changed = (noisy != plain).any(axis=-1)
    assert changed.sum() > 3000  # the face got grain
    assert not changed[:, :40].any() and not changed[:40].any()  # away from the face: untouched
    inside = np.zeros((200, 200), bool)
    cv2.circle(inside.view(np.uint8), (100, 100), 40, 1, -1)
    assert noise.noise_levels(noisy, inside)[3] > 3 * noise.noise_levels(plain, inside)[3]


# ---------------------------------------------------------------------------------------------- torch twin


def test_the_torch_twin_measures_and_adds_the_same():
    torch = pytest.importorskip("torch")
    from streamanon import noise_torch

    clean, inside = _ramp(301, 280), _region(301, 280)
    frame = _noisy(clean, 3.0, 2.0)
    face = np.clip(np.rint(clean + 8), 0, 255).astype(np.uint8)
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float()  # noqa: E731
    host = noise.noise_levels(frame, inside)
    twin = noise_torch.noise_levels(as_tensor(frame), torch.from_numpy(inside)).numpy()
    assert np.abs(host - twin).max() < 2e-3
    levels = np.array([[3.0, 3.0, np.nan, 2.0], [1.0, 0.7, 0.2, 0.5]], np.float32)
    expected = noise.missing_sigmas(levels[0], levels[1])
    assert np.allclose(noise_torch.missing_sigmas(*torch.from_numpy(levels)).numpy(), expected, atol=1e-5)
    alpha = inside.astype(np.float32)
    for seed in (7, 8):
        expected = noise.noisy_like(face, frame, alpha, seed).astype(np.float32)
        got = noise_torch.noisy_like(as_tensor(face), as_tensor(frame), torch.from_numpy(alpha), seed).numpy()
        assert np.abs(expected - got).max() <= 1 and np.abs(expected - got).mean() < 0.01
    big = noise.TILE + 40  # a window that wraps around the tile
    sigmas = np.array([2.0, 1.0, 0.5, 0.0], np.float32)
    expected = noise.noise_from(sigmas, big, big, 3)
    got = noise_torch.noise_from(torch.from_numpy(sigmas), big, big, 3).numpy()
    assert np.abs(expected - got).max() < 1e-4
    clean_face = as_tensor(np.clip(np.rint(clean), 0, 255))
    assert torch.equal(noise_torch.noisy_like(clean_face, clean_face, torch.from_numpy(alpha), 1), clean_face)


@pytest.mark.gpu
def test_on_cuda_the_twin_adds_the_hosts_noise():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from streamanon import noise_torch

    clean, inside = _ramp(), _region()
    frame = _noisy(clean, 4.0, 2.0)
    face = np.clip(np.rint(clean + 8), 0, 255).astype(np.uint8)
    alpha = inside.astype(np.float32)
    on_cuda = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float().cuda()  # noqa: E731
    expected = noise.noisy_like(face, frame, alpha, 5).astype(np.float32)
    got = noise_torch.noisy_like(on_cuda(face), on_cuda(frame), on_cuda(alpha), 5).cpu().numpy()
    assert np.abs(expected - got).max() <= 1 and np.abs(expected - got).mean() < 0.01
