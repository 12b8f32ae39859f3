"""Feeding the GPU: pinned uploads and the guard thread's own stream (streamanon.gpu)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from streamanon.gpu import upload, use_own_stream  # noqa: E402
from streamanon.photometric.tensors import from_backend, to_backend  # noqa: E402


def test_upload_on_the_cpu_shares_memory_unless_asked_for_a_copy():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    shared = upload(array, "cpu")
    assert np.shares_memory(shared.numpy(), array) and torch.equal(shared, torch.from_numpy(array))
    copy = upload(array, "cpu", writable=True)
    copy += 1
    assert np.array_equal(array, np.arange(24).reshape(2, 3, 4))  # the input is never written
    strided = upload(array[:, ::2], "cpu")  # a view of every other row comes out contiguous
    assert strided.is_contiguous() and torch.equal(strided, torch.from_numpy(array[:, ::2].copy()))


def test_own_stream_is_only_for_cuda():
    assert use_own_stream("cpu") is None


# ------------------------------------------------------------------ CUDA (skipped on CPU machines)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_pinned_upload_arrives_before_the_work_queued_after_it():
    """Non-blocking copies from pinned memory: the kernels queued behind a long one must still
    read the uploaded values, and the source array may change at once."""
    busy = torch.randn(4096, 4096, device="cuda")
    for _ in range(8):
        busy = busy @ busy / 64  # keeps the stream busy while the uploads are queued
    arrays = [np.full((1080, 1920, 3), i, np.uint8) for i in range(4)]
    tensors = [upload(array, "cuda") for array in arrays]
    for array in arrays:
        array[...] = 255
    assert [int(t.sum().item()) for t in tensors] == [i * 1080 * 1920 * 3 for i in range(4)]
    assert all(t.is_cuda and t.dtype == torch.uint8 for t in tensors)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_thread_on_its_own_stream_leaves_the_others_on_the_default_one():
    """The identity guard's thread: torch and CuPy both queue on its new stream, DLPack hand-overs
    stay correct there, and the pipeline's thread keeps the default stream."""
    from concurrent.futures import ThreadPoolExecutor

    cupy = pytest.importorskip("cupy")

    def on_guard_thread():
        stream = use_own_stream("cuda")
        tensor = torch.arange(24, dtype=torch.uint8, device="cuda").reshape(2, 2, 2, 3)
        doubled = from_backend(to_backend(tensor) * 2, "cuda")
        return (stream.cuda_stream, torch.cuda.current_stream().cuda_stream, cupy.cuda.get_current_stream().ptr,
                doubled.cpu())  # fmt: skip

    with ThreadPoolExecutor(1) as pool:
        made, torch_current, cupy_current, doubled = pool.submit(on_guard_thread).result()
    assert made == torch_current == cupy_current != torch.cuda.default_stream().cuda_stream
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert torch.equal(doubled, torch.arange(24, dtype=torch.uint8).reshape(2, 2, 2, 3) * 2)
