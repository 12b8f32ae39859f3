"""``streamanon export``: build the generator's TensorRT engines once per machine.

Wraps :func:`streamanon.generate.runtime.build_engines`. Each engine file is named by the model
hash, GPU name, TensorRT and torch-tensorrt versions, padded batch size, resolution and dtype
(:meth:`GeneratorRuntime.engine_path`), so the ``tensorrt`` backend later loads exactly these
files and never a stale engine. ``streamanon.cli`` registers the command; it imports PyTorch only
when it runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from ..errors import UserError

# runtime.COMPILED_MAX_BATCH, the pipeline's largest compiled batch (a literal: this module must not import torch).
DEFAULT_MAX_BATCH = 8

DTYPE_CHOICES = ("auto", "fp16", "bf16", "fp32")


def parse_batch_sizes(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> list[int] | None:
    """``"1,2,8"`` -> ``[1, 2, 8]`` (sorted, without repeats); empty or None -> None (every size)."""
    if value is None or not value.strip():
        return None
    sizes = set()
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            size = int(part)
        except ValueError:
            raise click.BadParameter(f"'{part}' is not a whole number (expected e.g. 1,2,4)") from None
        if size < 1:
            raise click.BadParameter(f"batch sizes must be >= 1, got {size}")
        sizes.add(size)
    return sorted(sizes) or None


def _missing_for_tensorrt(device: str) -> list[str]:
    """What this machine lacks for building TensorRT engines on ``device`` (empty: nothing)."""
    import torch

    from .runtime import tensorrt_available

    missing = []
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            missing.append(f"a CUDA build of PyTorch (this is {torch.__version__}, CPU only)")
        else:
            missing.append("a CUDA GPU visible to PyTorch (none found)")
    else:
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            missing.append(f"GPU {index} (PyTorch sees {torch.cuda.device_count()})")
    if not tensorrt_available():
        missing.append("torch-tensorrt (pip install 'streamanon[tensorrt]')")
    return missing


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the engine directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"engine directory {path} is not writable (choose another with --engine-dir)")
    return path


@click.command("export")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="Generator weights [the registry's].")
@click.option("--device", default="cuda", show_default=True, help="CUDA device to build for (cuda or cuda:N).")
@click.option(
    "--batch-sizes",
    callback=parse_batch_sizes,
    help="Comma-separated face counts, e.g. 1,2,4; each is padded up to a power of two "
    "(or --max-batch) [every padded size up to --max-batch].",
)
@click.option(
    "--dtype", default="auto", show_default=True, type=click.Choice(DTYPE_CHOICES), help="auto = fp16 on CUDA."
)
@click.option("--max-batch", default=DEFAULT_MAX_BATCH, show_default=True, type=click.IntRange(1, 4096),
              help="Largest batch size (the pipeline runs larger batches in chunks of it).")
@click.option(
    "--engine-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Engine cache [$STREAMANON_ENGINES, the checkout's engines/, or engines/ in $STREAMANON_CACHE "
    "(~/.cache/streamanon)].",
)
def export_command(
    weights: Path | None,
    device: str,
    batch_sizes: list[int] | None,
    dtype: str,
    max_batch: int,
    engine_dir: Path | None,
) -> None:
    """Build (or find cached) TensorRT engines of the generator for this GPU.

    Prints one engine file per line. Needs a CUDA GPU, torch-tensorrt and trained weights.
    """
    too_big = [n for n in batch_sizes or [] if n > max_batch]
    if too_big:
        raise UserError(f"batch size {too_big[0]} is larger than --max-batch {max_batch}")
    name = device.strip().lower()
    if not re.fullmatch(r"cuda(:\d+)?", name):
        raise UserError(f"TensorRT engines are built on a CUDA device; got --device {device} (use cuda or cuda:N)")
    try:
        import torch

        from .runtime import build_engines, default_engine_dir, resolve_weights
    except ImportError as exc:
        raise UserError(f"streamanon export needs PyTorch ({exc}): pip install 'streamanon[generate]'") from None

    weights_path = resolve_weights(weights)  # ModelUnavailable says how to get them
    missing = _missing_for_tensorrt(name)
    if missing:
        raise UserError(f"streamanon export needs {' and '.join(missing)}")
    target = _writable_dir(engine_dir if engine_dir is not None else default_engine_dir())

    files = build_engines(
        weights_path, device=name, batch_sizes=batch_sizes, dtype=dtype, max_batch=max_batch, engine_dir=target
    )
    unwritten = [path for path in files if not path.is_file()]
    if unwritten:
        raise UserError(f"engine built but not saved: {unwritten[0]} (see the warning above)")
    for path in files:
        click.echo(str(path))
    gpu = torch.cuda.get_device_name(torch.device(name))
    click.echo(f"streamanon: {len(files)} TensorRT engine(s) for {gpu} ready in {target}", err=True)
