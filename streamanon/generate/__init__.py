"""generate stage: the landmark-conditioned face generator and its inference runtime.

``condition`` (heatmaps, masking, per-track latents), ``model`` (conditional U-Net generator,
discriminator, landmark regressor), ``appearance`` (the shipped statistical appearance generator,
same contract) with ``warp`` (thin-plate splines), ``guard`` (the identity guard) and ``runtime``
(``load_generator`` with eager / compile / TensorRT backends). Nothing here is imported with the package: torch loads only when a module is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["load_generator", "GeneratorRuntime"]

if TYPE_CHECKING:  # pragma: no cover
    from .runtime import GeneratorRuntime, load_generator


def __getattr__(name: str):
    # Lazy: `import streamanon.generate` must work without torch installed.
    if name in __all__:
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(name)
