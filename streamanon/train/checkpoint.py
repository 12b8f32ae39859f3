"""Checkpoint format of the generator: one ``torch.save`` dict, loadable with ``weights_only=True``.

Shipped weights (``generator_128.pt``)::

    {"format": "streamanon.generator", "version": 1, "architecture": "unet" | "appearance",
     "config": the architecture's config as a dict, "generator_ema": state_dict, "step": int}

``architecture`` names the model class (absent means ``unet``, the conditional U-Net of
:mod:`streamanon.generate.model`; ``appearance`` is :mod:`streamanon.generate.appearance`).

Training checkpoints add a ``"train"`` entry (raw generator, discriminator, landmark regressor,
optimizers, grad scaler, training config, loss history length) so that a run can resume.
``export_weights`` strips it. Files are written to a temporary name and renamed on success.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..generate.appearance import ARCHITECTURE as APPEARANCE
from ..generate.appearance import AppearanceConfig, AppearanceGenerator
from ..generate.model import Generator, GeneratorConfig

FORMAT = "streamanon.generator"
VERSION = 1
UNET = "unet"


def state_dict_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state dict's names, dtypes, shapes and values; device independent."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        # Viewing the bytes as uint8 works for every dtype, bfloat16 included (numpy lacks it).
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(
    path: str | os.PathLike,
    config: GeneratorConfig | AppearanceConfig,
    generator_ema: torch.nn.Module,
    step: int,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint; ``train_state`` (optional) holds everything else needed to resume."""
    path = Path(path)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": APPEARANCE if isinstance(config, AppearanceConfig) else UNET,
        "config": config.to_dict(),
        "generator_ema": {k: v.detach().cpu() for k, v in generator_ema.state_dict().items()},
        "step": int(step),
    }
    if train_state is not None:
        payload["train"] = train_state
    _atomic_save(payload, path)
    return path


def _load_failure(exc: Exception) -> str:
    """Why torch.load refused a file, in a few words. Not torch's own text: for a file that is no
    plain tensor pickle it is a paragraph advising ``weights_only=False``, which would run whatever
    code the pickle holds."""
    if isinstance(exc, OSError):  # unreadable (permissions, I/O): say so, not "not a weights file"
        return f"cannot read it: {exc.strerror or exc}"
    text = str(exc)
    if "Unsupported global" in text:
        return "it holds Python objects besides tensors, which are not loaded: that would run their code"
    if "PytorchStreamReader" in text:  # a PyTorch zip archive, damaged or cut short
        return text.strip().splitlines()[0].split(". ")[0][:160]
    return "not a PyTorch weights file"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint; raise ``UserError`` for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise UserError(f"{path} is not a readable streamanon generator checkpoint ({_load_failure(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a streamanon generator checkpoint (no '{FORMAT}' format tag)")
    if payload.get("version", 0) > VERSION:
        raise UserError(f"{path} has checkpoint version {payload['version']}; this streamanon reads up to {VERSION}")
    return payload


def generator_from_checkpoint(payload: dict[str, Any]) -> Generator | AppearanceGenerator:
    """Build the generator of a loaded checkpoint with its EMA weights (CPU, eval mode)."""
    architecture = payload.get("architecture", UNET)
    generator: Generator | AppearanceGenerator
    if architecture == UNET:
        generator = Generator(GeneratorConfig.from_dict(payload["config"]))
    elif architecture == APPEARANCE:
        generator = AppearanceGenerator(AppearanceConfig.from_dict(payload["config"]))
    else:
        raise UserError(f"unknown generator architecture '{architecture}' in checkpoint (this streamanon knows unet, appearance)")
    try:
        generator.load_state_dict(payload["generator_ema"])
    except RuntimeError as exc:
        raise UserError(f"generator weights do not match their stored config: {str(exc).splitlines()[0]}") from None
    return generator.eval().requires_grad_(False)


def export_weights(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the inference-only weights file (config + EMA generator + step) of a training checkpoint."""
    payload = load_checkpoint(checkpoint)
    payload.pop("train", None)
    out = Path(out)
    _atomic_save(payload, out)
    return out
