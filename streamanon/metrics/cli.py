"""``streamanon eval ORIGINAL ANONYMIZED``: measure an anonymization against its original."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Callable

import click

from ..cli import SEQUENCE_FPS, parse_rotations
from ..errors import UserError

BASELINE_MODES = ("blur", "pixelate", "solid")


def _parse_baselines(value: str | None) -> list[str]:
    if not value:
        return []
    modes = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in modes if m not in BASELINE_MODES]
    if unknown:  # a command-line value: a usage error (exit 2), as for any other bad option
        raise click.BadParameter(f"unknown baseline '{unknown[0]}' (choose from {', '.join(BASELINE_MODES)})",
                                 param_hint="'--baselines'")  # fmt: skip
    return list(dict.fromkeys(modes))  # keep order, drop repeats


def run_baseline(original: Path, mode: str, workdir: Path, rotations: tuple[int, ...] = (0,),
                 sequence_fps: float | None = None) -> Path:  # fmt: skip
    """Anonymize ``original`` with the pipeline in ``mode`` (detecting at ``rotations``; a folder of
    frames as a sequence at ``sequence_fps``); return the output path."""
    from ..config import load_config
    from ..io.images import is_image_path
    from ..files import anonymize_file

    if original.is_dir():
        dst = workdir / mode
    elif is_image_path(original):
        dst = workdir / f"{mode}{original.suffix}"
    else:
        # Matroska holds H.264 next to any audio codec the source may carry (mp2, pcm, ...).
        dst = workdir / f"{mode}.mkv"
    config = load_config(overrides={"replace.mode": mode, "detect.rotations": rotations})
    anonymize_file(original, dst, config, sequence_fps=sequence_fps if original.is_dir() else None)
    return dst


@click.command("eval")
@click.argument("original", type=click.Path(exists=True, path_type=Path))
@click.argument("anonymized", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an HTML report (radar plot, leaks, worst faces).")
@click.option("--baselines", default=None,
              help="Comma-separated modes to run on ORIGINAL and add as rows, e.g. blur,pixelate.")  # fmt: skip
@click.option("--max-frames", type=click.IntRange(1, None), default=None, help="Evaluate only the first N frames.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.4,
              show_default=True,
              help="CenterFace score threshold for faces of the original.")
@click.option("--detect-rotations", default=None, metavar="ANGLES", callback=parse_rotations,
              help="Also search the original's frames turned by these angles (0,90,180,270 or 'all'), as "
                   "`streamanon file --detect-rotations` does, for footage with faces at any roll [0].")
@click.option("--sequence", is_flag=True,
              help="ORIGINAL and ANONYMIZED are folders of video frames (as `streamanon file --sequence` reads them): "
                   "faces are tracked, and temporal stability is measured.")
@click.option("--fps", "sequence_fps", type=click.FloatRange(0.1, 1000.0), default=None,
              help="With --sequence: the frames' rate [30].")
@click.option("--no-hog", is_flag=True, help="Skip the dlib HOG detection rate (slow on large frames).")
@click.option("--emotion-weights", type=click.Path(dir_okay=False), default=None,
              help="Emotion classifier checkpoint (default: the shipped one).")
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None,
              help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default: $STREAMANON_MODELS "
                   "or the torch hub cache, else FID is reported unavailable.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the table.")
def eval_command(original: Path, anonymized: Path, json_path, report_path, baselines, max_frames, threshold,
                 detect_rotations, sequence, sequence_fps, no_hog, emotion_weights, inception_weights,
                 quiet) -> None:  # fmt: skip
    """Measure ANONYMIZED against ORIGINAL (two videos, or two folders of same-named images).

    Privacy (detection, re-identification, leaks), utility (pose, expression, emotion,
    lighting, colour), realism (FID, embedding Fréchet distance) and temporal stability,
    per face, per track and per clip.
    """
    from . import report as rep
    from .evaluate import EvalOptions, Models

    modes = _parse_baselines(baselines)
    if sequence_fps is not None and not sequence:
        raise click.UsageError("--fps is the frame rate of a --sequence; add --sequence or leave it out")
    # The evaluation takes minutes: a path that cannot be written must fail before it, not after.
    _check_outputs({"--json": json_path, "--report": report_path}, (original, anonymized))
    options = EvalOptions(
        detect_threshold=threshold, detect_rotations=detect_rotations or (0,), max_frames=max_frames, hog=not no_hog,
        emotion_weights=emotion_weights, inception_weights=inception_weights,
        sequence_fps=(sequence_fps or SEQUENCE_FPS) if sequence else None,
    )
    models = Models.load(options)
    show_progress = not quiet and sys.stderr.isatty()
    rows, thumbs = [], []
    row, worst = _evaluate(original, anonymized, options, models, show_progress)
    rows.append(row)
    thumbs.append(worst)
    if modes:
        with tempfile.TemporaryDirectory(prefix="streamanon-eval-") as tmp:
            for mode in modes:
                if not quiet:
                    click.echo(f"running baseline '{mode}' ...", err=True)
                produced = run_baseline(original, mode, Path(tmp), options.detect_rotations, options.sequence_fps)
                row, worst = _evaluate(original, produced, _with_label(options, mode), models, show_progress)
                row["anonymized"] = f"<{mode} baseline>"
                rows.append(row)
                thumbs.append(worst)
    document = rep.build_document(rows)
    if json_path is not None:
        _write_atomically(json_path, lambda tmp: rep.write_json(document, tmp))
    if report_path is not None:
        html = rep.render_html(document, thumbs)
        _write_atomically(report_path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    if not quiet:
        click.echo(rep.console_table(rows))
        notes = dict.fromkeys(note for r in rows for note in r.get("notes", []))  # each once, in order
        for note in notes:
            click.echo(f"note: {note}", err=True)
    sys.stdout.flush()


def _check_outputs(outputs: dict[str, Path | None], inputs: tuple[Path, ...]) -> None:
    """One-line :class:`UserError` for an output file that could not be written: its folder is
    missing or not writable, it is a folder, it is one of the inputs, or two options name the same file."""
    from ..io.paths import check_parent_writable, same_file

    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise UserError(f"{option} needs a file name, not a folder: {path}")
        resolved = path.resolve()
        for source in inputs:
            if same_file(path, Path(source)):
                raise UserError(f"{option} would overwrite the input {source}: give another file name")
        if resolved in seen:
            raise UserError(f"{seen[resolved]} and {option} name the same file: {path}")
        seen[resolved] = option
        try:
            check_parent_writable(path)
        except UserError as exc:
            raise UserError(f"{option}: {exc}") from None


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` into a hidden file next to ``path``, renamed onto it only when complete."""
    from ..io.paths import atomic_output

    try:
        with atomic_output(Path(path)) as tmp:
            write(tmp)
    except OSError as exc:  # e.g. the disk filled up; the partial file is already removed
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _evaluate(original: Path, anonymized: Path, options, models, show_progress: bool):
    """evaluate_pair with a frame counter on a terminal."""
    from .evaluate import evaluate_pair

    if not show_progress:
        return evaluate_pair(original, anonymized, options, models)
    from tqdm import tqdm

    with tqdm(desc=f"eval {options.label}", unit="frame", file=sys.stderr, leave=False) as bar:
        return evaluate_pair(original, anonymized, options, models, progress=lambda _: bar.update(1))


def _with_label(options, label: str):
    from dataclasses import replace

    return replace(options, label=label)
