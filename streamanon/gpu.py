"""Feeding a CUDA device without stalling it: pinned uploads and per-thread streams.

Copying from ordinary (pageable) host memory may make the driver wait until everything already
queued on the stream has run (CUDA's "API synchronization behavior"), so an upload in the middle of
a frame would stall the host behind the GPU. :func:`upload` stages arrays in pinned memory and
copies them asynchronously instead. :func:`use_own_stream` moves one thread's work (the identity
guard's) off the stream the frames use. On a CPU device both are plain or do nothing.
"""

from __future__ import annotations

import numpy as np
import torch


def upload(array: np.ndarray, device: torch.device | str, *, writable: bool = False) -> torch.Tensor:
    """``array`` as a tensor on ``device``, without waiting for the device's queued work on CUDA.

    On CUDA the array is copied into pinned memory from PyTorch's caching host allocator (which
    keeps the block until the copy has run) and sent with a non-blocking copy; work queued after
    it on the current stream sees the data. On a CPU device the tensor shares ``array``'s memory
    unless ``writable`` asks for a copy (a CUDA upload is always a new tensor).
    """
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    device = torch.device(device)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.clone() if writable else tensor.to(device)


def use_own_stream(device: torch.device | str) -> torch.cuda.Stream | None:
    """Make torch and CuPy queue this thread's CUDA work on a new stream of its own; returns it
    (None on a CPU device).

    For the identity guard's thread: on the shared default stream its work (a choice runs dozens
    of candidates) would sit in the queue in front of the next frame's kernels, and every copy back
    to the host would wait for it. Both libraries keep a current stream per thread, so the
    pipeline's thread is unaffected. The stream is non-blocking: it does not synchronise with the
    default stream; the guard's inputs and results cross between the threads as host arrays.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    stream = torch.cuda.Stream(device)
    torch.cuda.set_stream(stream)
    try:
        import cupy
    except ImportError:  # the photometric steps then run on the host
        return stream
    index = device.index if device.index is not None else torch.cuda.current_device()
    cupy.cuda.ExternalStream(stream.cuda_stream, index).use()
    return stream
