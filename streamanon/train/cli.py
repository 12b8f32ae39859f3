"""Click commands of the generator trainer; ``streamanon.cli`` registers them as
``streamanon train prepare`` and ``streamanon train run``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..config import GUARD_LANDMARKS
from ..errors import UserError


@click.command("prepare")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="New data directory.")
@click.option("--size", default=128, show_default=True, type=click.IntRange(32, 1024), help="Aligned crop side (px).")
@click.option("--quality", default=None, type=click.IntRange(1, 100), help="JPEG quality of the stored crops [75].")
@click.option("--val-fraction", default=0.05, show_default=True, type=click.FloatRange(0.0, 0.5), help="Held-out share.")
@click.option("--limit", default=None, type=click.IntRange(1), help="At most this many images per source (seeded sample).")
@click.option("--workers", default=None, type=click.IntRange(1, 256), help="Processes [CPU count].")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the subset and the split.")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0.05, 0.95), help="Detection score.")
@click.option("--min-coverage", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Drop faces whose mask region lies less than this share inside the photo.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def prepare_command(
    sources: tuple[Path, ...],
    out: Path,
    size: int,
    quality: int | None,
    val_fraction: float,
    limit: int | None,
    workers: int | None,
    seed: int,
    threshold: float,
    min_coverage: float,
    quiet: bool,
) -> None:
    """Detect, landmark and align the faces of image folders SOURCES into training shards in OUT."""
    from .prepare import DEFAULT_QUALITY, PrepareOptions, prepare

    options = PrepareOptions(
        size=size,
        quality=quality or DEFAULT_QUALITY,
        val_fraction=val_fraction,
        seed=seed,
        threshold=threshold,
        min_coverage=min_coverage,
    )
    workers = workers or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    meta = prepare(sources, out, options, limit=limit, workers=workers, progress=not quiet and sys.stderr.isatty())
    counts, dropped = meta["counts"], meta["dropped"]
    click.echo(
        f"prepared {counts['train']} train + {counts['val']} val faces from {meta['images']} images "
        f"(dropped {sum(dropped.values())}: {json.dumps(dropped)}) in {meta['seconds']} s; "
        f"{meta['bytes'] / 2**20:.2f} MiB, {meta['bytes_per_face']:.0f} B/face, "
        f"~{meta['estimate']['mib']} MiB for {meta['estimate']['faces']} faces -> {out}"
    )


@click.command("run")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Prepared data.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--steps", default=60_000, show_default=True, type=click.IntRange(1), help="Total steps (resume continues).")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(1), help="Faces per step.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--lr", default=None, type=click.FloatRange(0, min_open=True), help="Learning rate of G and D [0.002].")
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "off"]))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, 64), help="Data loader processes.")
@click.option("--resume", default="auto", show_default=True, help="'auto' (OUT/checkpoint.pt if any), 'none' or a path.")
@click.option("--sample-every", default=500, show_default=True, type=click.IntRange(0))
@click.option("--checkpoint-every", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--log-every", default=10, show_default=True, type=click.IntRange(1))
@click.option("--max-minutes", default=None, type=click.FloatRange(0, min_open=True),
              help="Stop after this many minutes (checkpoint saved; resume continues).")  # fmt: skip
@click.option("--base-channels", default=None, type=click.IntRange(4, 256), help="Generator width [32].")
@click.option("--config", "config_json", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON file of TrainConfig fields (command-line options win).")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def run_command(
    data: Path,
    out: Path,
    steps: int,
    batch: int,
    device: str,
    seed: int,
    lr: float | None,
    amp: str,
    workers: int,
    resume: str,
    sample_every: int,
    checkpoint_every: int,
    log_every: int,
    max_minutes: float | None,
    base_channels: int | None,
    config_json: Path | None,
    quiet: bool,
) -> None:
    """Train the landmark-conditioned generator on DATA; results (checkpoint, weights, loss
    curves, sample grids) go to OUT."""
    from .loop import TrainConfig, train

    fields: dict = {}
    if config_json is not None:
        try:
            fields = json.loads(config_json.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{config_json} is not valid JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise UserError(f"{config_json} must hold a JSON object of TrainConfig fields")
    given = {
        "data": str(data),
        "out": str(out),
        "steps": steps,
        "batch": batch,
        "device": device,
        "seed": seed,
        "amp": amp,
        "workers": workers,
        "resume": None if resume.lower() == "none" else resume,
        "sample_every": sample_every,
        "checkpoint_every": checkpoint_every,
        "log_every": log_every,
        "max_minutes": max_minutes,
    }
    ctx = click.get_current_context()
    for key, value in given.items():
        # Options left at their default do not override the JSON file.
        explicit = ctx.get_parameter_source(key) != click.core.ParameterSource.DEFAULT
        if explicit or key not in fields:
            fields[key] = value
    fields["progress"] = not quiet
    if lr is not None:
        fields.update(lr_g=lr, lr_d=lr)
    if base_channels is not None:
        fields["generator"] = dict(fields.get("generator", {}), base_channels=base_channels)
    result = train(TrainConfig.from_dict(fields))
    summary = ", ".join(f"{k} {v:.4g}" for k, v in result.losses.items())
    click.echo(f"trained steps {result.start_step + 1}..{result.step} ({summary}); weights -> {result.weights}")


@click.command("appearance")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Prepared data.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Weights file to write (.pt).")
@click.option("--components", default=96, show_default=True, type=click.IntRange(4, 512),
              help="Texture components (= latent dimension).")  # fmt: skip
@click.option("--min-coverage", default=0.8, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Use faces whose mask region lies at least this much inside the source photo.")  # fmt: skip
@click.option("--max-faces", default=None, type=click.IntRange(1), help="At most this many faces (seeded subset).")
@click.option("--no-flip", is_flag=True, help="Do not add mirrored faces.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--detail/--no-detail", default=True, show_default=True,
              help="Also fit the sharpening and grain that match real faces' detail ('train detail').")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an existing weights file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def appearance_command(
    data: Path, out: Path, components: int, min_coverage: float, max_faces: int | None, no_flip: bool, seed: int,
    detail: bool, overwrite: bool, quiet: bool,
) -> None:  # fmt: skip
    """Fit the statistical appearance generator (CPU, minutes) on DATA and write its weights to OUT.

    OUT takes --weights like any generator; a JSON summary of the fit is written beside it."""
    from dataclasses import asdict

    from .appearance import AppearanceFitOptions, fit_appearance
    from .checkpoint import save_checkpoint

    if out.exists() and not overwrite:
        raise UserError(f"output exists: {out} (use --overwrite to replace it)")
    options = AppearanceFitOptions(
        components=components, min_coverage=min_coverage, flip=not no_flip, max_faces=max_faces, seed=seed
    )
    model, summary = fit_appearance(str(data), options, progress=not quiet and sys.stderr.isatty())
    fit = asdict(summary) | {"options": asdict(options), "data": read_counts(data)}
    if detail:
        model, fit["detail"] = _fit_detail(model, data, seed, min_coverage)
    save_checkpoint(out, model.config, model, step=0)
    _write_json(out.with_suffix(".fit.json"), fit)
    click.echo(
        f"fitted {summary.components} components on {summary.faces} faces (+ mirrored) in {summary.seconds} s: "
        f"{100 * summary.explained_variance:.1f} % of texture variance kept, landmarks explain "
        f"{100 * summary.shape_explained:.1f} % of it -> {out}"
    )


def _fit_detail(model, data: Path, seed: int, min_coverage: float) -> tuple:
    """Fit the detail of ``model``; returns the detailed model and the summary for the fit JSON."""
    from dataclasses import asdict

    from .detail import DetailFitOptions, fit_detail

    options = DetailFitOptions(seed=seed, min_coverage=min_coverage)
    detailed, summary = fit_detail(model, str(data), options)
    before, after = summary.band_power_before, summary.band_power_after
    click.echo(
        f"detail: sharpen {summary.sharpen:g}, grain {summary.grain:g}; power at "
        + ", ".join(f"{band} cycles/px {before[band]:.2f} -> {after[band]:.2f}" for band in before)
        + " of real faces'"
    )
    return detailed, asdict(summary) | {"options": asdict(options)}


@click.command("detail")
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Appearance generator weights (from 'train appearance').")  # fmt: skip
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Prepared data.")  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Weights file to write (.pt).")  # fmt: skip
@click.option("--min-coverage", default=0.75, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Use faces whose mask region lies at least this much inside the source photo.")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="Replace an existing weights file.")
def detail_command(weights: Path, data: Path, out: Path, min_coverage: float, seed: int, overwrite: bool) -> None:
    """Fit the fine detail (sharpening and skin grain) of an appearance generator to real faces' spectra.

    Writes OUT, and OUT.fit.json: the fit summary of WEIGHTS (if beside it) with the detail's."""
    from ..generate.appearance import AppearanceGenerator
    from .checkpoint import generator_from_checkpoint, load_checkpoint, save_checkpoint

    if out.exists() and not overwrite:
        raise UserError(f"output exists: {out} (use --overwrite to replace it)")
    model = generator_from_checkpoint(load_checkpoint(weights))
    if not isinstance(model, AppearanceGenerator):
        raise UserError(f"{weights} is not an appearance generator; 'train detail' fits only those")
    fit_path = weights.with_suffix(".fit.json")
    fit = json.loads(fit_path.read_text()) if fit_path.is_file() else {}
    model, fit["detail"] = _fit_detail(model, data, seed, min_coverage)
    save_checkpoint(out, model.config, model, step=0)
    _write_json(out.with_suffix(".fit.json"), fit)
    click.echo(f"-> {out}")


@click.command("validate")
@click.option("--weights", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Generator weights [the shipped default].")  # fmt: skip
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Prepared data.")
@click.option("--count", default=500, show_default=True, type=click.IntRange(1), help="Validation faces to use.")
@click.option("--start", default=0, show_default=True, type=click.IntRange(0), help="Index of the first of them.")
@click.option("--seed", default=0, show_default=True, type=int, help="Base of the latent codes.")
@click.option("--guard-candidates", default=32, show_default=True, type=click.IntRange(0, 1024),
              help="Identities the identity guard may try per face (0: no guard).")  # fmt: skip
@click.option("--guard-plausibility/--guard-farthest", default=True, show_default=True,
              help="Show the most face-like safe candidate (CenterFace) or the farthest from the original.")  # fmt: skip
@click.option("--guard-landmarks", default="both", show_default=True,
              type=click.Choice(GUARD_LANDMARKS),
              help="Where the guard embeds a candidate: at the original's landmarks, at those found on the candidate "
                   "as shown (as the judge does), or both (the smaller distance counts).")  # fmt: skip
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=Path), help="Write figures here.")
@click.option("--grid", "grid_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Sample grid PNG (rows: masked input / generated / post-processed / original).")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def validate_command(
    weights: Path | None, data: Path, count: int, start: int, seed: int, guard_candidates: int,
    guard_plausibility: bool, guard_landmarks: str, json_path: Path | None, grid_path: Path | None, quiet: bool,
) -> None:  # fmt: skip
    """Acceptance figures of a generator on held-out faces: dlib detection rate, landmark NME,
    re-identification rate and diversity."""
    from .validate import validate_generator

    progress = not quiet and sys.stderr.isatty()
    result = validate_generator(weights, data, count, seed, grid_path, progress, guard_candidates, guard_plausibility,
                                start, guard_landmarks)  # fmt: skip
    if json_path is not None:
        _write_json(json_path, result)
    for name in ("original", "raw", "unguarded", "output"):
        row = result[name]
        click.echo(
            f"{name:>9}: dlib detects {100 * row['detection_rate']:.1f} %, landmark NME {row['landmark_nme_mean']:.4f}, "
            f"re-identified {100 * row['reid_rate']:.1f} % (mean distance {row['embedding_distance_mean']:.3f}; "
            f"at dlib's stock landmarks {100 * row['reid_rate_hog']:.1f} %)"
        )
    guard = result["guard"]
    if guard["candidates"]:
        click.echo(
            f"    guard: {guard['mean_tried']:.1f} candidates tried per face, "
            f"{100 * guard['strict_rate']:.1f} % shown with colour transfer only, "
            f"{100 * guard.get('bold_rate', 0.0):.1f} % with a bolder face, "
            f"{100 * guard['unsafe_rate']:.1f} % blurred (no candidate unlike enough); "
            f"{1000 * guard['seconds_per_choice']:.0f} ms a choice ({guard['landmarks']} landmarks)"
        )
    click.echo(
        f"diversity: two tracks get faces {result['diversity_distance_mean']:.3f} apart "
        f"({100 * result['diversity_same_person_rate']:.1f} % 'same person'); {result['faces']} faces"
    )


def read_counts(data: Path) -> dict:
    """Face counts of a prepared data directory (for provenance in summaries)."""
    from .dataset import read_meta

    meta = read_meta(data)
    return {"counts": meta["counts"], "sources": meta["sources"], "resolution": meta["resolution"]}


def _write_json(path: Path, payload: dict) -> None:
    _write_text(path, json.dumps(payload, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".partial.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@click.command("card")
@click.argument("weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--clip-eval", "clip_evals", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON of 'streamanon eval' on a generate-mode clip (repeatable): identity over time.")  # fmt: skip
def card_command(weights: Path, clip_evals: tuple[Path, ...]) -> None:
    """Write WEIGHTS.md, the model card of generator WEIGHTS, from WEIGHTS.fit.json and
    WEIGHTS.validation.json beside it (and the clip evaluations given)."""
    from ..bench.environment import cpu_model, usable_cores
    from .card import model_card

    evaluations = []
    for path in clip_evals:
        try:
            evaluations.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON: {exc}") from None
    text = model_card(weights, evaluations, f"{cpu_model()} ({usable_cores()} cores)")
    out = weights.with_suffix(".md")
    _write_text(out, text)
    click.echo(f"wrote {out}")
