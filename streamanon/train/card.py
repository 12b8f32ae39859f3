"""``streamanon train card``: the model card of generator weights, built from the JSON that the
fit, the validation and clip evaluations wrote (nothing typed by hand).

Inputs beside ``WEIGHTS.pt``: ``WEIGHTS.fit.json`` (``train appearance``), ``WEIGHTS.validation.json``
(``train validate --json``) and optionally a sample grid ``WEIGHTS_samples.png``; clip evaluations
(``streamanon eval --json``) are passed explicitly. Output: ``WEIGHTS.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError

# Acceptance bounds of the generator (issue 3): what the card checks each figure against.
BOUNDS = {
    "reid_rate": ("<=", 0.05),
    "detection_rate": (">=", 0.95),
    "landmark_nme_mean": ("<=", 0.06),
    "identity_stability": (">=", 0.9),
}

DATA_TERMS = (
    "UTKFace (non-commercial research only), Face Mask 12k (celebrity photos, via an MIT-licensed "
    "repository) and the web-collected faces set (research use); the weights inherit the most "
    "restrictive of these: **non-commercial research use only**"
)


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None


def _verdict(key: str, value: float) -> str:
    op, bound = BOUNDS[key]
    ok = value <= bound if op == "<=" else value >= bound
    return f"{'meets' if ok else 'misses'} {op} {bound:g}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _row(label: str, row: dict) -> str:
    """One line of the validation table (``reid_rate_hog`` is absent from older figures: n/a)."""
    return (
        f"| {label} | {100 * row['detection_rate']:.1f} % | {row['landmark_nme_mean']:.4f} | "
        f"{_percent(row['reid_rate'])} | {_percent(row.get('reid_rate_hog'))} | {row['embedding_distance_mean']:.3f} |"
    )


def _guard_landmarks_text(mode: str) -> str:
    """How the guard measured a candidate (``guard.landmarks`` of the validation figures)."""
    return {
        "condition": " The guard embeds each candidate at the original face's landmarks.",
        "own": " The guard embeds each candidate at the landmarks our landmark stage finds on it, as the judge does.",
        "both": " The guard embeds each candidate at the original face's landmarks and at those our landmark stage "
                "finds on it, as the judge does; the smaller distance counts.",
    }.get(mode, "")


def clip_figures(evaluation: dict) -> tuple[str, float, int | None, float, float]:
    """(clip name, identity stability, identity switches, re-identification rate, pose NME) of an
    eval JSON; the stability is the mean cosine of consecutive dlib embeddings of the generated
    face; the switches are None in evaluations made before ``eval`` counted them."""
    try:
        row = evaluation["rows"][0]  # the evaluated clip; baselines follow
        metrics = row["metrics"]
        switches = row["temporal"].get("identity_switch_frames")
        return (
            Path(row["original"]).name,
            float(row["temporal"]["identity_stability"]["mean"]),
            None if switches is None else len(switches),
            float(metrics["reid"]["mean"]),
            float(metrics["pose_nme"]["mean"]),
        )
    except (KeyError, IndexError, TypeError, ValueError):
        raise UserError(
            "clip evaluation lacks rows[0] temporal/metrics figures (is it from 'streamanon eval --json'?)"
        ) from None


def model_card(weights: Path, clip_evaluations: list[dict], hardware: str) -> str:
    """The Markdown card of ``weights`` from the JSON beside it and the given clip evaluations."""
    fit = _read_json(weights.with_suffix(".fit.json"), "fit summary")
    val = _read_json(weights.with_suffix(".validation.json"), "validation figures")
    opts = fit["options"]
    counts = fit["data"]["counts"]
    guard = val["guard"]
    detail = fit.get("detail")  # absent in fits made before the detail existed
    lines = [
        f"# {weights.name}: appearance generator ({fit['components']} components, {fit['data']['resolution']} px)",
        "",
        "An appearance generator for `--mode generate`: a Gaussian model of shape-free face textures whose "
        "coefficients follow the target landmarks (ridge regression) plus an identity drawn from the track's "
        "latent, rendered onto the landmarks with a thin-plate spline (`streamanon/generate/appearance.py`). "
        "It draws new faces, not stored ones"
        + ("; a fitted sharpening and skin grain give them real faces' fine detail (below), but they are "
           "occasionally ghosted (double contours around the eyes)." if detail else
           "; they are smooth (no skin texture) and occasionally ghosted (double contours around the eyes).")
        + " The GAN U-Net of `streamanon/generate/model.py` has no trained weights yet.",
        "",
        "## Training",
        "",
        f"- Data: `streamanon train prepare` on `../shared/data/faces/*` ({', '.join(fit['data']['sources'])}): "
        f"{counts['train']} training and {counts['val']} held-out faces; the fit used the {fit['faces']} training "
        f"faces whose face region lies at least {opts['min_coverage']:g} inside the source photo, each also "
        f"mirrored ({fit['samples']} samples)",
        f"- Fit: {fit['components']} principal components (randomized SVD, seed {opts['seed']}) keep "
        f"{100 * fit['explained_variance']:.1f} % of the texture variance in the face region "
        f"({fit['region_pixels']} px); the landmark regression (ridge {opts['ridge']:g}) predicts "
        f"{100 * fit['shape_explained']:.1f} % of the component variance; {fit['seconds'] / 60:.1f} min on {hardware}",
    ]
    if detail:
        before, after = detail["band_power_before"], detail["band_power_after"]
        lines.append(
            f"- Detail (`streamanon train detail`, {detail['seconds'] / 60:.1f} min): unsharp mask (Gaussian "
            f"{detail['options']['sharpen_sigma']:g} px) of amount {detail['sharpen']:g} and a skin grain of strength "
            f"{detail['grain']:g} ({detail['grain_amplitude_median'] * detail['grain']:.1f} grey levels, robust spread "
            f"over the face region): {detail['options']['fields']} Gaussian random fields with the spectrum and "
            f"amplitude of what the components leave out of {detail['residual_faces']} training faces' luminance, "
            "mixed by the track's latent. Both strengths are matched to real faces on "
            f"{detail['calibration_faces']} other training faces; luminance power relative to real faces "
            "(median): "
            + ", ".join(f"{band} cycles/px {before[band]:.2f} -> {after[band]:.2f}" for band in before)
        )
    lines += [
        f"- Reproduce: `streamanon train appearance --data DATA --out {weights.name} --components "
        f"{opts['components']} --min-coverage {opts['min_coverage']:g}`"
        + (" (fits the detail too)" if detail else ""),
        "",
        f"## Validation ({val['faces']} held-out faces, `streamanon train validate`)",
        "",
        "Rows: the judges on the original crops (the ceiling), the bare generator output, after the "
        "photometric post-processing, and what generate mode shows (identity guard: up to "
        f"{guard['candidates']} candidate identities per face, else colour transfer only, else bolder "
        "candidates, else blur"
        + ("; among the safe candidates, the one CenterFace finds most face-like)."
           if guard.get("plausibility") == "centerface" else "; among the safe candidates, the farthest).")
        + _guard_landmarks_text(guard.get("landmarks", "condition"))
        + (f" Faces {val.get('first_face', 0)}-{val.get('first_face', 0) + val['faces'] - 1} of the held-out set."),
        "",
        "Re-identification (dlib distance < 0.6 to the original) is measured twice: embedded at the landmarks our "
        "landmark stage finds on the output (CenterFace + calibrated dlib predictor, the judge of "
        "`train validate`), and at those of dlib's stock pipeline (HOG box straight into the 68-point predictor), "
        "an estimate the guard never sees.",
        "",
        "| output | dlib HOG detects | landmark NME (68 pts, IOD) | re-identified, our landmarks | "
        "re-identified, stock dlib landmarks | mean distance |",
        "|---|---|---|---|---|---|",
    ]
    names = {"original": "original crop", "raw": "generator", "unguarded": "+ photometric", "output": "shown (guarded)"}
    for key, label in names.items():
        lines.append(_row(label, val[key]))
    untuned_path = weights.with_suffix(".validation-untuned.json")
    if untuned_path.is_file():
        # Faces that no choice of the guard's rules looked at: a check that those rules generalise.
        untuned = _read_json(untuned_path, "validation figures on untuned faces")
        first = untuned.get("first_face", 0)
        lines.append(_row(f"shown, faces {first}-{first + untuned['faces'] - 1} (not used to tune the guard)",
                          untuned["output"]))  # fmt: skip
    shown = val["output"]
    reid = max(shown["reid_rate"], shown.get("reid_rate_hog", 0.0))  # the worse of the two estimates
    lines += [
        "",
        f"Guard: {guard['mean_tried']:.1f} candidates rendered per face; {100 * guard['strict_rate']:.1f} % of faces "
        f"shown with colour transfer only, {100 * guard.get('bold_rate', 0.0):.1f} % with a bolder face (latent "
        f"scaled by 1.5, the last resort), {100 * guard['unsafe_rate']:.1f} % blurred because no candidate was "
        f"unlike the original. Two tracks on the same face get faces {val['diversity_distance_mean']:.3f} apart "
        f"in dlib space ({100 * val['diversity_same_person_rate']:.1f} % would pass as one person).",
        "",
        "The blurred faces are also what lowers the shown row's detection rate and raises its "
        f"landmark error; dlib's HOG detector finds {100 * val['original']['detection_rate']:.1f} % of the "
        "original crops (128 px, many tight): the ceiling of the detection figures.",
        "",
        "Against the acceptance bounds (shown row): re-identification "
        f"{100 * reid:.1f} % (the larger of the two estimates; {_verdict('reid_rate', reid)}), detection "
        f"{100 * shown['detection_rate']:.1f} % ({_verdict('detection_rate', shown['detection_rate'])}), landmark NME "
        f"{shown['landmark_nme_mean']:.4f} ({_verdict('landmark_nme_mean', shown['landmark_nme_mean'])}). The guard "
        "measures with dlib, the same recogniser as the re-identification figures, so they are optimistic "
        "against other recognisers; the unguarded row is the generator's own.",
    ]
    if clip_evaluations:
        lines += ["", "## Identity over time (`streamanon file --mode generate`, then `streamanon eval`)", ""]
        lines += ["| clip | mean cosine of consecutive dlib embeddings | identity switches | frames re-identified "
                  "| pose NME |"]  # fmt: skip
        lines += ["|---|---|---|---|---|"]
        for evaluation in clip_evaluations:
            name, stability, switches, reid, nme = clip_figures(evaluation)
            lines.append(
                f"| `{name}` | {stability:.3f} ({_verdict('identity_stability', stability)}) | "
                f"{'–' if switches is None else switches} | {100 * reid:.1f} % | {nme:.4f} |"
            )
    grid = weights.with_name(weights.stem + "_samples.png")
    if grid.is_file():
        lines += [
            "",
            f"![samples]({grid.name}) (rows: masked input, generator, + photometric, shown, original)",
        ]
    lines += ["", f"Licence: trained on {DATA_TERMS}.", ""]
    return "\n".join(lines)
