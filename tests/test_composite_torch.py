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


def _masks(seed: int) -> np.ndarray:
    """Masks the compositor meets and some it should survive: a face mask, shapes touching the
    edges, one-pixel lines, specks, an empty and a full mask, a soft one; (B, S, S) float32."""
    from streamanon.faces.align import face_mask, template

    rng = np.random.default_rng(seed)
    masks = [face_mask(template(S) + rng.normal(0, 3, (68, 2)), S)]
    disc = np.zeros((S, S), np.float32)
    cv2.circle(disc, tuple(int(v) for v in rng.integers(0, S, 2)), int(rng.integers(5, 90)), 1.0, -1)
    masks.append(disc)
    lines = np.zeros((S, S), np.float32)
    lines[int(rng.integers(0, S))] = 1.0
    lines[:, int(rng.integers(0, S))] = 1.0
    masks.append(lines)
    masks.append((rng.random((S, S)) > 0.7).astype(np.float32))
    masks += [np.zeros((S, S), np.float32), np.ones((S, S), np.float32)]
    masks.append(cv2.GaussianBlur(disc, (0, 0), 4))  # soft: alpha also scales by the mask
    return np.stack(masks)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("width", [0.0, 0.3, 1.0, 2.5, 7.68, 12.0, 300.0])
def test_device_feather_equals_the_reference(seed, width):
    masks = _masks(seed)
    got = composite_torch.feather(torch.from_numpy(masks), width).numpy()
    for mask, alpha in zip(masks, got):
        assert np.array_equal(alpha, composite.feather(mask, width, outside_border=True))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("width", [0.0, 1.0, 7.68])
def test_feather_support_is_the_bounding_box_of_the_alpha(seed, width):
    for mask in _masks(seed):
        rows, cols = np.nonzero(composite.feather(mask, width) > 0)
        expected = (cols.min(), rows.min(), cols.max(), rows.max()) if rows.size else None
        assert composite.feather_support(mask, width) == expected


@pytest.mark.parametrize("seed", range(6))
def test_placing_a_support_box_equals_placing_the_alpha(seed):
    frame, crop, matrix, alpha = _case(seed)
    support = composite.feather_support((alpha > 0).astype(np.float32), 0.0)
    by_alpha = composite.paste_region(frame.shape, matrix, crop.shape, alpha)
    by_box = composite.place_support(frame.shape, matrix, support)
    assert (by_alpha is None) == (by_box is None)
    if by_alpha is not None:
        assert by_box[0] == by_alpha[0]
        np.testing.assert_allclose(by_box[1], by_alpha[1], rtol=0, atol=1e-9)


def test_batched_paste_equals_pasting_one_by_one():
    """Several faces of different placements, two of them overlapping: one batch gives exactly the
    pixels of one paste after the other (a later face covers an earlier one)."""
    frame, _, _, _ = _case(3)
    frame = cv2.resize(frame, (400, 300))
    cases = [_case(seed) for seed in (4, 5, 6)]
    crops = np.stack([crop for _, crop, _, _ in cases])
    alphas = np.stack([alpha for _, _, _, alpha in cases])
    matrices = [matrix for _, _, matrix, _ in cases]
    # The third face lands on the first one, shifted by 7 px.
    matrices[0] = np.array([[0.8, 0.1, -100.0], [-0.1, 0.8, -60.0]])
    matrices[2] = matrices[0] + np.array([[0.0, 0.0, 7.0], [0.0, 0.0, 5.0]])
    placements = [composite.paste_region(frame.shape, m, crops[0].shape, a) for m, a in zip(matrices, alphas)]
    assert all(placement is not None for placement in placements)
    one_by_one = torch.from_numpy(frame.copy())
    for crop, alpha, placement in zip(crops, alphas, placements):
        composite_torch.paste_placed(one_by_one, torch.from_numpy(crop), *placement, alpha)
    batched = torch.from_numpy(frame.copy())
    composite_torch.paste_placed_batch(batched, torch.from_numpy(crops), torch.from_numpy(alphas), placements)
    assert torch.equal(batched, one_by_one)
    assert not torch.equal(batched, torch.from_numpy(frame))
    # A face far larger than the others: sampled on its own, the same pixels again.
    big = np.array([[0.25, 0.0, 0.0], [0.0, 0.25, 0.0]])  # the crop spread over 512 x 512 frame pixels
    sized = [composite.paste_region(frame.shape, m, crops[0].shape, a) for m, a in zip([big, *matrices[1:]], alphas)]
    sides = np.array([(x2 - x1, y2 - y1) for (x1, y1, x2, y2), _ in sized])
    assert 3 * sides[:, 0].max() * sides[:, 1].max() > 2 * sides.prod(axis=1).sum()  # too unequal for one batch
    one_by_one, batched = torch.from_numpy(frame.copy()), torch.from_numpy(frame.copy())
    for crop, alpha, placement in zip(crops, alphas, sized):
        composite_torch.paste_placed(one_by_one, torch.from_numpy(crop), *placement, alpha)
    composite_torch.paste_placed_batch(batched, torch.from_numpy(crops), torch.from_numpy(alphas), sized)
    assert torch.equal(batched, one_by_one)
    with pytest.raises(ValueError, match="differ in number"):
        composite_torch.paste_placed_batch(batched, torch.from_numpy(crops), torch.from_numpy(alphas), placements[:2])


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("width", [0.0, 7.68, 12.0])
def test_cuda_feather_equals_the_reference(width):
    masks = _masks(0)
    got = composite_torch.feather(torch.from_numpy(masks).cuda(), width).cpu().numpy()
    for mask, alpha in zip(masks, got):
        assert np.array_equal(alpha, composite.feather(mask, width, outside_border=True))

