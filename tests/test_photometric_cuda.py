"""Parity of the CuPy photometric backend (photometric/cuda.py) with the NumPy/OpenCV reference.

Needs CuPy and a CUDA device; the whole module is skipped otherwise (the CPU-side checks of the
backend selection live in test_photometric.py). Run on a GPU machine with::

    pip install -e '.[gpu,test]' && python -m pytest -q -m gpu tests/test_photometric_cuda.py

Every public function runs on real face crops and on random inputs, batches of 1 and 5: uint8
results are within one level of the reference's and pixels whose mask is 0 are bit-identical;
NumPy inputs give NumPy results and CuPy inputs CuPy results.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from conftest import shared_path
from streamanon.composite import ellipse_mask
from streamanon.config import PhotometricConfig
from streamanon.errors import UserError
from streamanon.photometric import API, get_backend, reference

pytestmark = pytest.mark.gpu


def _cuda_unavailable() -> str | None:
    """Why this module cannot run here, or None."""
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - ImportError, or a CuPy build without its CUDA libraries
        return f"CuPy is not importable ({type(exc).__name__}: {exc}); needs 'streamanon[gpu]' on a CUDA machine"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - no driver, no device
        return f"CuPy sees no CUDA device ({type(exc).__name__}: {exc})"
    return None if count > 0 else "CuPy sees no CUDA device"


_SKIP_REASON = _cuda_unavailable()
if _SKIP_REASON is not None:
    pytest.skip(_SKIP_REASON, allow_module_level=True)

import cupy as cp  # noqa: E402

cuda = get_backend("cuda")

CFG = PhotometricConfig()
STEPS = ("relight", "laplacian_refine", "color_transfer", "postprocess")
SIZE = 128


# ---------------------------------------------------------------------------------------------
# inputs


def _soft_face_mask(size: int) -> np.ndarray:
    """An elliptical face region with a soft edge and a wide band of exact zeros around it."""
    m = size // 8
    return ellipse_mask((size, size), (m + 4, m, size - m - 4, size - m), feather_px=size / 16)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Ten real face crops (aligned UTKFace crops resized to 128 px), RGB uint8."""
    files = sorted(shared_path("faces/utkface").glob("*.jpg"))[:10]
    assert len(files) == 10
    return np.stack([cv2.resize(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), (SIZE, SIZE)) for f in files])


def _face_batch(faces: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generated stand-ins (faces 0..n-1) and originals (other people, lit from one side)."""
    side = np.linspace(0.25, 1.0, SIZE, dtype=np.float32)[None, None, :, None]
    anon = faces[:n].copy()
    orig = np.clip(np.round(faces[5 : 5 + n] * side), 0, 255).astype(np.uint8)
    mask = np.stack([_soft_face_mask(SIZE)] * n)
    return anon, orig, mask


def _random_batch(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise crops and masks with exact 0s, exact 1s and fractions in between."""
    rng = np.random.default_rng(seed)
    anon = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    orig = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    mask = np.clip(rng.uniform(-0.5, 1.5, (n, size, size)), 0.0, 1.0).astype(np.float32)
    mask[:, :, : size // 4] = 0.0  # a solid zero band as well
    return anon, orig, mask


@pytest.fixture(params=["faces", "random"])
def batch_of(request, faces):
    def make(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _face_batch(faces, n) if request.param == "faces" else _random_batch(n, 96, seed=n)

    return make


def _host(x) -> np.ndarray:
    return cp.asnumpy(x) if isinstance(x, cp.ndarray) else x


def assert_u8_parity(out, expected: np.ndarray, base: np.ndarray, mask: np.ndarray) -> None:
    """Within one level of the reference; bit-identical to it (and to ``base``) where mask == 0."""
    out = _host(out)
    assert out.dtype == np.uint8 and out.shape == expected.shape
    diff = np.abs(out.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, f"max error {diff.max()} levels at {np.unravel_index(diff.argmax(), diff.shape)}"
    outside = mask == 0
    assert outside.any()
    assert np.array_equal(out[outside], expected[outside])
    if base.dtype == np.uint8:
        assert np.array_equal(out[outside], base[outside])


# ---------------------------------------------------------------------------------------------
# the API


def test_cuda_backend_offers_the_whole_api_with_the_reference_signatures():
    import inspect

    assert get_backend("cuda:0") is cuda
    for name in API:
        assert callable(getattr(cuda, name)), name
        assert inspect.signature(getattr(cuda, name)).parameters.keys() == (
            inspect.signature(getattr(reference, name)).parameters.keys()
        ), name


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("n", [1, 5])
def test_steps_match_the_reference(batch_of, step, n):
    anon, orig, mask = batch_of(n)
    expected = getattr(reference, step)(anon, orig, mask, CFG)
    out = getattr(cuda, step)(anon, orig, mask, CFG)
    assert isinstance(out, np.ndarray) and not isinstance(out, cp.ndarray)
    assert_u8_parity(out, expected, anon, mask)


@pytest.mark.parametrize("step", STEPS)
def test_cupy_in_cupy_out_equals_numpy_in_numpy_out(faces, step):
    anon, orig, mask = _face_batch(faces, 5)
    from_host = getattr(cuda, step)(anon, orig, mask, CFG)
    on_device = getattr(cuda, step)(cp.asarray(anon), cp.asarray(orig), cp.asarray(mask), CFG)
    assert isinstance(on_device, cp.ndarray) and on_device.dtype == cp.uint8
    assert np.array_equal(cp.asnumpy(on_device), from_host)


@pytest.mark.parametrize("n", [1, 5])
def test_float_inputs_match_the_reference(faces, n):
    anon, orig, mask = _face_batch(faces, n)
    anon_f, orig_f = anon / np.float32(255), orig / np.float32(255)
    for step in STEPS:
        expected = getattr(reference, step)(anon_f, orig_f, mask, CFG)
        assert_u8_parity(getattr(cuda, step)(anon_f, orig_f, mask, CFG), expected, anon_f, mask)


@pytest.mark.parametrize(
    "switches",
    [
        dict(relight=False, laplacian=False, color_transfer=False),
        dict(relight=True, laplacian=False, color_transfer=False),
        dict(relight=False, laplacian=True, color_transfer=False),
        dict(relight=False, laplacian=False, color_transfer=True),
        dict(relight=True, laplacian=True, color_transfer=False),
    ],
)
def test_postprocess_switches_match_the_reference(faces, switches):
    anon, orig, mask = _face_batch(faces, 5)
    cfg = dataclasses.replace(CFG, **switches)
    out = cuda.postprocess(anon, orig, mask, cfg)
    assert_u8_parity(out, reference.postprocess(anon, orig, mask, cfg), anon, mask)
    if not any(switches.values()):
        assert np.array_equal(out, anon) and out is not anon


@pytest.mark.parametrize(
    "settings",
    [
        dict(bilateral_diameter=5, bilateral_sigma_color=0.3, bilateral_sigma_space=2.0),
        dict(bilateral_diameter=15, bilateral_sigma_color=0.05, bilateral_sigma_space=8.0, pyramid_levels=6),
        dict(bilateral_diameter=4, pyramid_levels=1),
        dict(pyramid_levels=2),
        dict(shading_downsample=1),
        dict(shading_downsample=4, bilateral_diameter=9),
    ],
)
def test_other_settings_match_the_reference(faces, settings):
    anon, orig, mask = _face_batch(faces, 2)
    cfg = dataclasses.replace(CFG, **settings)
    assert_u8_parity(cuda.postprocess(anon, orig, mask, cfg), reference.postprocess(anon, orig, mask, cfg), anon, mask)


@pytest.mark.parametrize("size", [75, 33])
def test_odd_crop_sizes_match_the_reference(size):
    anon, orig, mask = _random_batch(3, size, seed=size)
    assert_u8_parity(cuda.postprocess(anon, orig, mask, CFG), reference.postprocess(anon, orig, mask, CFG), anon, mask)


def test_non_contiguous_inputs(faces):
    anon, orig, mask = _face_batch(faces, 3)
    anon_v, orig_v, mask_v = anon[:, :, ::-1], np.swapaxes(orig, 1, 2), np.swapaxes(mask, 1, 2)
    expected = reference.postprocess(anon_v, orig_v, mask_v, CFG)
    assert_u8_parity(cuda.postprocess(anon_v, orig_v, mask_v, CFG), expected, anon_v, mask_v)
    on_device = cuda.postprocess(
        cp.asarray(anon)[:, :, ::-1], cp.asarray(orig).swapaxes(1, 2), cp.asarray(mask).swapaxes(1, 2), CFG
    )
    assert_u8_parity(on_device, expected, anon_v, mask_v)


def test_a_face_does_not_depend_on_its_batch(faces):
    anon, orig, mask = _face_batch(faces, 5)
    together = cuda.postprocess(anon, orig, mask, CFG)
    for i in range(5):
        alone = cuda.postprocess(anon[i : i + 1], orig[i : i + 1], mask[i : i + 1], CFG)
        assert np.abs(alone[0].astype(int) - together[i].astype(int)).max() <= 1


def test_flat_faces_and_empty_masks(faces):
    """A flat face (the bilateral filter's copy path, zero chroma spread) and an empty mask."""
    flat = np.full((SIZE, SIZE, 3), (180, 140, 120), np.uint8)
    anon = np.stack([flat, flat, faces[0]])
    orig = faces[1:4].copy()
    mask = np.stack([np.ones((SIZE, SIZE), np.float32), np.zeros((SIZE, SIZE), np.float32), _soft_face_mask(SIZE)])
    for step in STEPS:
        out = getattr(cuda, step)(anon, orig, mask, CFG)
        expected = getattr(reference, step)(anon, orig, mask, CFG)
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1, step
        assert np.array_equal(out[1], flat), step


def test_grid_stride_loops_cover_arrays_larger_than_the_grid(faces, monkeypatch):
    """A grid capped at a few blocks must still write every element (the loops stride over it)."""
    anon, orig, mask = _face_batch(faces, 2)
    expected = cuda.postprocess(anon, orig, mask, CFG)
    monkeypatch.setattr(cuda, "_MAX_BLOCKS", 3)
    assert np.array_equal(cuda.postprocess(anon, orig, mask, CFG), expected)


def test_empty_batch():
    empty = np.zeros((0, SIZE, SIZE, 3), np.uint8)
    no_mask = np.zeros((0, SIZE, SIZE), np.float32)
    for step in STEPS:
        out = getattr(cuda, step)(empty, empty, no_mask, CFG)
        assert isinstance(out, np.ndarray) and out.shape == empty.shape and out.dtype == np.uint8
        out = getattr(cuda, step)(cp.asarray(empty), cp.asarray(empty), cp.asarray(no_mask), CFG)
        assert isinstance(out, cp.ndarray) and out.shape == empty.shape and out.dtype == cp.uint8
    albedo, shading = cuda.shading_albedo(empty, 9, 0.1, 5.0)
    assert albedo.shape == empty.shape and shading.shape == empty.shape[:3]


def test_bad_inputs_raise_the_reference_errors():
    anon, orig, mask = _random_batch(1, 32, seed=0)
    cases = [
        ((anon, orig[:, :16], mask, CFG), ValueError, "same shape"),
        ((anon, orig, mask[0], CFG), ValueError, r"\(B, H, W\)"),
        ((anon[0], orig[0], mask, CFG), ValueError, r"\(B, H, W, 3\)"),
        ((anon, orig, mask.astype(np.uint8), CFG), ValueError, "floating"),
        ((anon.astype(np.int32), orig, mask, CFG), ValueError, "uint8 or floating"),
        ((anon, orig, mask, dataclasses.replace(CFG, pyramid_levels=0)), UserError, "pyramid_levels"),
        ((anon, orig, mask, dataclasses.replace(CFG, bilateral_sigma_color=0.0)), UserError, "sigma"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            reference.postprocess(*args)
        with pytest.raises(error, match=message):
            cuda.postprocess(*args)
    with pytest.raises(UserError):
        cuda.laplacian_pyramid(np.zeros((8, 8), np.float32), 0)
    with pytest.raises(ValueError):
        cuda.laplacian_pyramid(np.zeros((8, 8), np.uint8), 2)
    with pytest.raises(ValueError):
        cuda.reconstruct_pyramid([])


# ---------------------------------------------------------------------------------------------
# the building blocks


@pytest.mark.parametrize(
    "params",
    [(9, 0.1, 5.0), (5, 0.3, 2.0), (15, 0.05, 8.0), (0, 0.1, 3.0), (-1, 0.2, 1.5), (4, 0.1, 1.0), (9, 1e-7, 5.0)],
)
@pytest.mark.parametrize("n", [1, 5])
def test_shading_albedo_matches_opencv(batch_of, params, n):
    images, _, _ = batch_of(n)
    albedo, shading = cuda.shading_albedo(images, *params)
    albedo_ref, shading_ref = reference.shading_albedo(images, *params)
    assert shading.dtype == albedo.dtype == np.float32
    assert shading.shape == shading_ref.shape and albedo.shape == albedo_ref.shape
    np.testing.assert_allclose(shading, shading_ref, rtol=0, atol=2e-5)
    np.testing.assert_allclose(albedo, albedo_ref, rtol=1e-4, atol=2e-5)
    on_device = cuda.shading_albedo(cp.asarray(images), *params)
    assert all(isinstance(a, cp.ndarray) for a in on_device)
    np.testing.assert_array_equal(cp.asnumpy(on_device[1]), shading)


@pytest.mark.parametrize("downsample", [2, 4])
@pytest.mark.parametrize("size", [SIZE, 75])
def test_reduced_shading_matches_the_reference(batch_of, downsample, size):
    """Shrink and grow are the same array code on both backends; only the filter differs."""
    images = _random_batch(3, size, seed=downsample)[0] if size != SIZE else batch_of(3)[0]
    _, shading = cuda.shading_albedo(images, 31, 1.0, 12.0, downsample=downsample)
    _, shading_ref = reference.shading_albedo(images, 31, 1.0, 12.0, downsample=downsample)
    np.testing.assert_allclose(shading, shading_ref, rtol=0, atol=2e-5)


def test_shading_of_a_flat_face_is_the_face(faces):
    images = np.stack([np.full((SIZE, SIZE, 3), 90, np.uint8), faces[0]])
    _, shading = cuda.shading_albedo(images, 9, 0.1, 5.0)
    _, shading_ref = reference.shading_albedo(images, 9, 0.1, 5.0)
    assert np.ptp(shading[0]) == 0  # copied, not filtered (grey values may differ in the last bit)
    np.testing.assert_allclose(shading, shading_ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize(
    "shape",
    [(64, 64), (37, 51), (37, 51, 3), (45, 45, 1), (1, 1), (2, 3, 3), (1, 8, 8, 3), (5, 75, 75, 3), (2, 128, 96, 3)],
)
@pytest.mark.parametrize("levels", [1, 2, 4, 9])
def test_laplacian_pyramid_matches_opencv(shape, levels):
    image = np.random.default_rng(len(shape) * 10 + levels).random(shape, dtype=np.float32)
    pyramid = cuda.laplacian_pyramid(image, levels)
    expected = reference.laplacian_pyramid(image, levels)
    assert len(pyramid) == len(expected)
    for got, want in zip(pyramid, expected):
        assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    np.testing.assert_allclose(cuda.reconstruct_pyramid(pyramid), image, rtol=0, atol=1e-5)
    np.testing.assert_allclose(cuda.reconstruct_pyramid(expected), reference.reconstruct_pyramid(expected), atol=2e-6)
    on_device = cuda.laplacian_pyramid(cp.asarray(image), levels)
    assert all(isinstance(level, cp.ndarray) for level in on_device)
    rebuilt = cuda.reconstruct_pyramid(on_device)
    assert isinstance(rebuilt, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(rebuilt), image, rtol=0, atol=1e-5)


def test_ycbcr_conversions_match_the_reference():
    rgb = np.random.default_rng(3).random((2, 7, 9, 3), dtype=np.float32)
    ycc = cuda.rgb_to_ycbcr(rgb)
    np.testing.assert_allclose(ycc, reference.rgb_to_ycbcr(rgb), atol=1e-6)
    np.testing.assert_allclose(cuda.ycbcr_to_rgb(ycc), reference.ycbcr_to_rgb(ycc), atol=1e-6)
    np.testing.assert_allclose(cp.asnumpy(cuda.ycbcr_to_rgb(cuda.rgb_to_ycbcr(cp.asarray(rgb)))), rgb, atol=2e-6)
