"""Hand torch tensors to the photometric backends and back without copies.

The generator makes faces as torch tensors; the photometric backends take NumPy (reference) or
CuPy (CUDA) arrays. A CUDA tensor becomes a CuPy array over the same memory (DLPack), a CPU
tensor a NumPy array over the same memory, and back. Both libraries work on the CUDA default
stream unless told otherwise, so no synchronisation is needed between them here; a thread that
should not queue behind the pipeline's work moves both to a stream of its own
(:func:`use_own_stream`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_backend(tensor: torch.Tensor) -> Any:
    """``tensor`` as the array kind its photometric backend takes: CuPy for CUDA, else NumPy."""
    if tensor.is_cuda:
        import cupy

        return cupy.from_dlpack(tensor.detach())
    return tensor.detach().cpu().numpy()


def from_backend(array: Any, device: torch.device | str) -> torch.Tensor:
    """A NumPy or CuPy array as a tensor on ``device`` (no copy where it already lives there)."""
    if isinstance(array, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)
    return torch.from_dlpack(array).to(device)


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
