"""Photometric post-processing of generated faces: relighting, Laplacian refinement, colour transfer.

Two backends offer the same functions with the same signatures (:data:`API`): the NumPy/OpenCV
``reference`` module and a CuPy ``cuda`` module. :func:`get_backend` picks one by device.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UserError

# The functions every backend module provides, with reference.py's signatures.
API: tuple[str, ...] = (
    "shading_albedo",
    "relight",
    "laplacian_pyramid",
    "reconstruct_pyramid",
    "laplacian_refine",
    "color_transfer",
    "postprocess",
)


def get_backend(device: str) -> ModuleType:
    """The photometric module for ``device``: ``reference`` for "cpu", ``cuda`` for "cuda[:N]".

    The CUDA module (and CuPy) is imported only when a CUDA device is asked for.

    Raises:
        UserError: for an unknown device, or a CUDA device without CuPy or the CUDA backend.
    """
    name = str(device).strip().lower()
    if name == "cpu":
        from . import reference

        return reference
    if name == "cuda" or name.startswith("cuda:"):
        try:
            importlib.import_module("cupy")
        except ImportError:
            raise UserError(
                f"device '{device}' needs CuPy for the photometric steps: pip install 'streamanon[gpu]'"
            ) from None
        try:
            return importlib.import_module(f"{__name__}.cuda")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.cuda":
                raise
            raise UserError(f"device '{device}': this install has no CUDA photometric backend") from None
    raise UserError(f"unknown device '{device}' for the photometric steps (use 'cpu' or 'cuda[:N]')")
