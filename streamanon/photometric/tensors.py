"""Hand torch tensors to the photometric backends and back without copies.

The generator makes faces as torch tensors; the photometric backends take NumPy (reference) or
CuPy (CUDA) arrays. A CUDA tensor becomes a CuPy array over the same memory (DLPack), a CPU
tensor a NumPy array over the same memory, and back. Both libraries work on the CUDA default
stream unless told otherwise (or both on a thread's own one, :func:`streamanon.gpu.use_own_stream`),
so no synchronisation is needed between them here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..gpu import upload


def to_backend(tensor: torch.Tensor) -> Any:
    """``tensor`` as the array kind its photometric backend takes: CuPy for CUDA, else NumPy."""
    if tensor.is_cuda:
        import cupy

        return cupy.from_dlpack(tensor.detach())
    return tensor.detach().cpu().numpy()


def from_backend(array: Any, device: torch.device | str) -> torch.Tensor:
    """A NumPy or CuPy array as a tensor on ``device`` (no copy where it already lives there)."""
    if isinstance(array, np.ndarray):
        return upload(array, device)
    return torch.from_dlpack(array).to(device)

