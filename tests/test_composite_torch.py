"""The torch compositor (composite_torch.paste_aligned) against the OpenCV one, and the tensor
hand-over to the photometric backends."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from streamanon import composite, composite_torch  # noqa: E402
from streamanon.photometric.tensors import from_backend, to_backend  # noqa: E402

S = 128


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A smooth random frame and crop, a feathered disc alpha, and a random similarity that puts
    the crop anywhere from well inside to partly outside the frame, shrunk or enlarged."""
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(90, 360, 2))
    frame = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    crop = cv2.GaussianBlur(rng.integers(0, 256, (S, S, 3), dtype=np.uint8), (0, 0), 1.5)
    mask = np.zeros((S, S), np.float32)
    cv2.circle(mask, (64, 70), 45, 1.0, -1)
    alpha = composite.feather(mask, 12.0)
    angle, scale = rng.uniform(-0.6, 0.6), rng.uniform(0.3, 3.0)
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = rng.uniform([-40, -40], [width + 40, height + 40])
    matrix = np.concatenate([linear, (np.array([64.0, 64.0]) - linear @ centre)[:, None]], axis=1)
    return frame, crop, matrix, alpha


def _paste_torch(frame: np.ndarray, crop: np.ndarray, matrix: np.ndarray, alpha: np.ndarray, device="cpu"):
    tensor = torch.from_numpy(frame.copy()).to(device)
    composite_torch.paste_aligned(tensor, torch.from_numpy(crop).to(device), matrix, alpha)
    return tensor.cpu().numpy()


@pytest.mark.parametrize("seed", range(12))
def test_torch_paste_matches_opencv_within_one_level(seed):
    frame, crop, matrix, alpha = _case(seed)
    expected = frame.copy()
    composite.paste_aligned(expected, crop, matrix, alpha)
    got = _paste_torch(frame, crop, matrix, alpha)
    assert np.abs(got.astype(int) - expected).max() <= 1  # rounding only (OpenCV: 1/32 px, fixed point)
    # Exactly the same pixels are written: everything the reference leaves alone stays bit-identical.
    placement = composite.paste_region(frame.shape, matrix, crop.shape, alpha)
    untouched = np.ones(frame.shape[:2], bool)
    if placement is not None:
        x1, y1, x2, y2 = placement[0]
        untouched[y1:y2, x1:x2] = False
    assert np.array_equal(got[untouched], frame[untouched])


def test_torch_paste_keeps_alpha_zero_pixels_and_sets_opaque_ones():
    frame = np.full((200, 200, 3), 40, np.uint8)
    crop = np.full((S, S, 3), 200, np.uint8)
    alpha = composite.feather(np.pad(np.ones((64, 64), np.float32), 32), 8.0)
    matrix = np.array([[1.0, 0.0, -30.0], [0.0, 1.0, -20.0]])  # crop pixel c = frame pixel - (30, 20)
    got = _paste_torch(frame, crop, matrix, alpha)
    assert np.all(got[20 + 48 : 20 + 80, 30 + 48 : 30 + 80] == 200)  # alpha 1 inside the soft edge
    assert np.all(got[:20 + 32] == 40) and np.all(got[:, : 30 + 32] == 40)  # alpha 0 around the square
    assert np.all(got[20 + 96 :] == 40) and np.all(got[:, 30 + 96 :] == 40)


def test_torch_paste_off_the_frame_or_with_empty_alpha_changes_nothing():
    frame, crop, _, alpha = _case(0)
    far = np.array([[1.0, 0.0, 5000.0], [0.0, 1.0, 5000.0]])
    assert np.array_equal(_paste_torch(frame, crop, far, alpha), frame)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert np.array_equal(_paste_torch(frame, crop, identity, np.zeros((S, S), np.float32)), frame)


def test_torch_paste_rejects_bad_arguments():
    frame, crop, matrix, alpha = _case(1)
    with pytest.raises(ValueError, match="uint8"):
        composite_torch.paste_aligned(torch.zeros(10, 10, 3), torch.from_numpy(crop), matrix, alpha)
    with pytest.raises(ValueError, match="differ in size"):
        composite_torch.paste_aligned(torch.from_numpy(frame), torch.from_numpy(crop), matrix, alpha[:-1])
    with pytest.raises(ValueError, match="singular"):
        composite_torch.paste_aligned(torch.from_numpy(frame), torch.from_numpy(crop), np.zeros((2, 3)), alpha)


def test_cpu_tensors_reach_the_reference_backend_without_a_copy():
    tensor = torch.arange(24, dtype=torch.uint8).reshape(2, 2, 2, 3)
    array = to_backend(tensor)
    assert isinstance(array, np.ndarray) and np.shares_memory(array, tensor.numpy())
    back = from_backend(array, "cpu")
    assert back.data_ptr() == tensor.data_ptr() and torch.equal(back, tensor)


# ------------------------------------------------------------------ CUDA (skipped on CPU machines)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("seed", range(4))
def test_cuda_paste_matches_the_cpu_tensors(seed):
    frame, crop, matrix, alpha = _case(seed)
    on_cpu = _paste_torch(frame, crop, matrix, alpha)
    on_gpu = _paste_torch(frame, crop, matrix, alpha, device="cuda")
    assert np.abs(on_gpu.astype(int) - on_cpu).max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_become_cupy_arrays_over_the_same_memory():
    cupy = pytest.importorskip("cupy")
    tensor = torch.arange(24, dtype=torch.uint8, device="cuda").reshape(2, 2, 2, 3)
    array = to_backend(tensor)
    assert isinstance(array, cupy.ndarray) and array.data.ptr == tensor.data_ptr()
    back = from_backend(array * 2, "cuda")
    assert back.is_cuda and torch.equal(back, tensor * 2)
