"""``streamanon bench``: per-stage latency of the pipeline, printed and saved as JSON."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..config import MODES
from .environment import DEVICES

_RESOLUTION = re.compile(r"^(\d+)x(\d+)$")


def _resolutions(ctx, param, value: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        match = _RESOLUTION.match(item)
        if not match:
            raise click.BadParameter(f"'{item}' is not WIDTHxHEIGHT (e.g. 1280x720)")
        out.append((int(match.group(1)), int(match.group(2))))
    return tuple(out)


def _counts(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of integers (e.g. 1,2,4,8)") from None


@click.command("bench")
@click.option("--clip", type=click.Path(dir_okay=False, path_type=Path),
              help="Real clip to time [default: ../shared/data/videos/street_1080p_multi.mp4 when present].")
@click.option("--no-clip", is_flag=True, help="Synthetic scenes only.")
@click.option("--resolutions", default="640x360,1280x720,1920x1080", show_default=True, callback=_resolutions,
              help="Synthetic scene sizes, comma-separated WIDTHxHEIGHT.")
@click.option("--face-counts", default="1,2,4,8", show_default=True, callback=_counts,
              help="Faces planted per synthetic scene, comma-separated.")
@click.option("--no-synthetic", is_flag=True, help="The real clip only.")
@click.option("--faces-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Face crops for synthetic scenes [default: ../shared/data/faces/utkface].")
@click.option("--mode", "modes", type=click.Choice(MODES), multiple=True,
              help="Mode(s) to time, repeatable [default: blur, pixelate, generate].")
@click.option("--frames", type=click.IntRange(1, 100000), default=30, show_default=True,
              help="Measured frames per repeat.")
@click.option("--warmup", type=click.IntRange(0, 1000), default=3, show_default=True,
              help="Frames run before measuring, every repeat.")
@click.option("--repeats", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), help="Generator weights file.")
@click.option("--untrained-generator", is_flag=True,
              help="Time a freshly initialised U-Net generator instead of the shipped weights (rows labelled as such).")
@click.option("--generator-backend", type=click.Choice(("auto", "eager", "compile", "tensorrt")), default="auto",
              show_default=True)
@click.option("--no-deface", is_flag=True, help="Skip the end-to-end comparison with deface.")
@click.option("--deface-exe", type=click.Path(dir_okay=False), help="deface executable [default: from this venv/PATH].")
@click.option("--compare-frames", type=click.IntRange(1, 100000),
              help="Frames of the clip for the comparison [default: the whole clip].")
@click.option("--compare-repeats", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML pipeline settings (detection, encoder, ...).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON report [default: benchmarks/results/stages-<device>-<date>-<time>.json].")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines (the report is still printed).")
def bench_command(
    clip: Path | None, no_clip: bool, resolutions, face_counts, no_synthetic: bool, faces_dir: Path | None, modes,
    frames: int, warmup: int, repeats: int, device: str, weights: str | None, untrained_generator: bool,
    generator_backend: str, no_deface: bool, deface_exe: str | None, compare_frames: int | None,
    compare_repeats: int, config_path: Path | None, out: Path | None, quiet: bool,
) -> None:
    """Time every pipeline stage per frame and per face (p50/p95/p99) on a clip and synthetic scenes.

    Also times `streamanon file` against the `deface` tool end to end on the same clip, and prints
    our per-face time beside the seed paper's Table II (GPU numbers from the paper).
    Quick check (under a minute on a laptop CPU):

    \b
        streamanon bench --no-clip --resolutions 640x360 --face-counts 1,4 --frames 5 --repeats 1 --mode blur
    """
    from ..errors import UserError
    from .report import render, write_json
    from .run import DEFAULT_MODES, BenchSettings, default_clip, output_path, run_benchmark

    if clip is not None and no_clip:
        raise click.BadParameter("give --clip or --no-clip, not both", param_hint="--clip")
    if no_clip:
        clip = None
    elif clip is None:
        clip = default_clip()
        if clip is None and not quiet:
            click.echo("streamanon bench: default clip not found; synthetic scenes only", err=True)
    if no_synthetic:
        resolutions, face_counts = (), ()
    if (not resolutions or not face_counts) and clip is None:
        raise UserError("nothing to benchmark: no clip and no synthetic scenes")
    settings = BenchSettings(
        clip=clip, resolutions=resolutions, face_counts=face_counts, modes=tuple(modes) or DEFAULT_MODES,
        frames=frames, warmup=warmup, repeats=repeats, device=device, faces_dir=faces_dir, weights=weights,
        untrained_generator=untrained_generator, generator_backend=generator_backend, deface=not no_deface,
        deface_exe=deface_exe, compare_frames=compare_frames, compare_repeats=compare_repeats,
        config_path=config_path,
    )
    progress = None if quiet else (lambda line: click.echo(f"streamanon bench: {line}", err=True))
    report = run_benchmark(settings, progress)
    path = write_json(report, out or output_path(settings, report))
    click.echo(render(report))
    click.echo(f"\nwrote {path}")
