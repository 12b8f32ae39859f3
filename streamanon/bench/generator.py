"""Which generator the benchmark times: trained weights, an untrained stand-in, or none.

The package ships trained weights (the appearance generator); the conditional U-Net has none
yet. Timing an architecture without trained weights is still useful (its cost does not depend
on the weight values), but only when asked for: ``untrained=True`` saves freshly
initialised weights to a temporary checkpoint and loads it through the normal
``load_generator`` path, and every number it produces carries :data:`UNTRAINED_LABEL`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailable

UNTRAINED_LABEL = "UNTRAINED WEIGHTS, TIMING ONLY"
UNAVAILABLE_NO_WEIGHTS = "unavailable: no trained weights"


@dataclass
class GeneratorChoice:
    """The generator for generate-mode scenarios, or why there is none."""

    status: str  # "trained", "untrained" or "unavailable"
    label: str  # shown beside every generate-mode number ("" for trained weights)
    runtime: Any = None  # GeneratorRuntime, None when unavailable
    weights: str | None = None  # file the weights came from (trained only)
    detail: str = ""  # why unavailable, or how the stand-in was made

    def describe(self) -> dict:
        backend = getattr(self.runtime, "backend_name", None)
        return {"status": self.status, "label": self.label, "weights": self.weights, "backend": backend,
                "detail": self.detail}


def choose_generator(
    weights: str | None, untrained: bool, device: str, backend: str, workdir: Path, seed: int = 0
) -> GeneratorChoice:
    """An untrained U-Net stand-in if ``untrained`` (and no explicit ``weights``); else trained
    weights if they exist; else none.

    ``workdir`` (a temporary folder that outlives the run) holds the stand-in's checkpoint and
    any engine compiled from it, so that random weights never reach the shared engine cache.
    """
    try:
        from ..generate.runtime import load_generator, resolve_weights
    except ImportError as exc:
        return GeneratorChoice("unavailable", f"unavailable: {exc.name or 'torch'} not installed", detail=str(exc))

    if untrained and weights is None:
        # Asked for by name: the U-Net architecture, whose trained weights do not exist yet.
        return _untrained(device, backend, seed, workdir)
    try:
        path = resolve_weights(weights)
    except ModelUnavailable as exc:
        if weights is not None:
            raise  # an explicit --weights that is missing is an error, never a silent stand-in
        return GeneratorChoice("unavailable", UNAVAILABLE_NO_WEIGHTS, detail=str(exc))
    runtime = load_generator(path, device=device, backend=backend, seed=seed)
    return GeneratorChoice("trained", "", runtime, weights=str(path))


def _untrained(device: str, backend: str, seed: int, workdir: Path) -> GeneratorChoice:
    import torch

    from ..generate.model import Generator, GeneratorConfig
    from ..generate.runtime import load_generator
    from ..train.checkpoint import save_checkpoint

    torch.manual_seed(seed)  # the same stand-in on every run
    config = GeneratorConfig()
    path = save_checkpoint(workdir / "untrained_generator.pt", config, Generator(config).eval(), step=0)
    runtime = load_generator(path, device=device, backend=backend, seed=seed, engine_dir=workdir / "engines")
    detail = f"freshly initialised Generator({config}) (torch seed {seed}), loaded with load_generator"
    return GeneratorChoice("untrained", UNTRAINED_LABEL, runtime, detail=detail)
