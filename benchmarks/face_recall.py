"""How many annotated faces does streamanon hide? Recall on the 667 photos with 68-point ground truth.

    python benchmarks/face_recall.py                           # hide modes at the default threshold
    python benchmarks/face_recall.py --thresholds 0.2,0.3,0.4,0.5 --modes hide
    python benchmarks/face_recall.py --modes hide,generate --limit 100
    python benchmarks/face_recall.py --conditions all --rotations all   # faces at any roll

Each photo of ``../shared/data/landmarks68`` (300-W's HELEN test set and AFW: one annotated face a
file; other faces in AFW photos are not annotated) goes through the pipeline as
``streamanon file photo.jpg`` does (one frame, no tracking history). A face is *hidden* when at
least 99 % of its inner face (the hull of brows, eyes, nose and mouth) no longer shows the
original (:mod:`streamanon.metrics.coverage`), *missed* under 50 %, *partly* in between.

- ``hide``: the region blur, pixelate and solid replace completely (one run serves all three: they
  share detection, tracking and the hidden ellipse);
- ``generate``: pixels more than 2 levels from the original, on average over a window a tenth of
  the eye distance wide (generated faces, and the blur of faces that could not be generated);
  slower (the identity guard chooses an identity per face).

Prints a table (recall overall and by inter-ocular distance) and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from streamanon.bench.environment import describe_device
from streamanon.config import load_config, override_from_text, rotations_from_text
from streamanon.errors import UserError
from streamanon.faces.landmarks import inter_ocular, read_pts
from streamanon.io.images import read_image
from streamanon.metrics.coverage import change_window, changed_pixels, hidden_region, hidden_share, verdict
from streamanon.pipeline import Anonymizer
from streamanon.types import Frame

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "landmarks68"
SETS = ("helen_test", "afw")


def _rotated(degrees: float):
    def apply(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), degrees, 1.0)
        # Grow the canvas so the whole photo stays in view.
        cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
        new_w, new_h = int(round(height * sin + width * cos)), int(round(height * cos + width * sin))
        matrix[:, 2] += (new_w - width) / 2.0, (new_h - height) / 2.0
        turned = cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return turned, points @ matrix[:, :2].T + matrix[:, 2]

    return apply


def _small(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    small = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    return small, (points + 0.5) * 0.5 - 0.5


def _dark(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dim scene shot at high gain: exposure / 6, then sensor noise of 4 levels."""
    rng = np.random.default_rng(0)
    dim = image.astype(np.float32) / 6.0 + rng.normal(0.0, 4.0, image.shape)
    return np.clip(dim + 0.5, 0, 255).astype(np.uint8), points


def _grey(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One channel repeated, as a monochrome or infrared camera gives."""
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2), points


def _motion(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal motion blur over 9 px."""
    kernel = np.full((1, 9), 1.0 / 9.0, np.float32)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT), points


# Hard conditions, each applied to the photo and its annotation: name -> (image, points) -> (image, points).
# Faces of AFW are already 10-40 px between the eyes; "small" halves every photo again.
CONDITIONS = {
    "original": lambda image, points: (image, points),
    "small": _small,
    "dark": _dark,
    "grey": _grey,
    "motion": _motion,
    "roll30": _rotated(30),
    "roll45": _rotated(45),
    "roll60": _rotated(60),
    "roll90": _rotated(90),
    "roll180": _rotated(180),
}
# Inter-ocular distance bins (px, outer eye corners): the small faces are the hard ones.
SIZE_BINS = ((0, 40), (40, 80), (80, 160), (160, 10_000))
SHOW_NOT_HIDDEN = 8  # faces not fully hidden listed per run (all are in the JSON)


def annotated_photos(data: Path, sets: list[str], limit: int | None) -> list[tuple[str, Path]]:
    """(set, photo) pairs, each photo with its ``.pts`` beside it; ``limit`` per set."""
    photos = []
    for name in sets:
        folder = data / name
        if not folder.is_dir():
            raise SystemExit(f"face_recall: no folder {folder} (the shared data's landmarks68)")
        paths = sorted(p for p in folder.glob("*.jpg") if p.with_suffix(".pts").exists())
        photos += [(name, p) for p in paths[:limit]]
    return photos


def measure(anonymizer: Anonymizer, mode: str, photo: Path, condition: str = "original") -> dict:
    """One photo through the pipeline under ``condition``: the annotated face's inner-face share
    hidden, and more."""
    image, truth = CONDITIONS[condition](read_image(photo), read_pts(photo.with_suffix(".pts")))
    image = np.ascontiguousarray(image)
    anonymizer.reset()
    out, stats = anonymizer.process_frame(Frame(image, 0))
    height, width = image.shape[:2]
    row = {
        "photo": photo.name,
        "inter_ocular_px": round(float(inter_ocular(truth)), 1),
        "faces_found": stats.faces,
        "changed_share": round(hidden_share(changed_pixels(image, out, window=change_window(truth)), truth), 4),
    }
    if mode == "hide":
        boxes = [track.cover_box for track in anonymizer.tracker.tracks]
        row["share"] = round(hidden_share(hidden_region(boxes, height, width, anonymizer.config.replace), truth), 4)
    else:
        row["share"] = row["changed_share"]
        row["generated"] = stats.generated
    row["verdict"] = verdict(row["share"])
    return row


def summarise(rows: list[dict]) -> dict:
    """Counts and recall overall and per size bin."""

    def counts(subset: list[dict]) -> dict:
        verdicts = [r["verdict"] for r in subset]
        n = len(subset)
        return {
            "faces": n,
            "hidden": verdicts.count("hidden"),
            "partly": verdicts.count("partly"),
            "missed": verdicts.count("missed"),
            "recall": round(verdicts.count("hidden") / n, 4) if n else None,
        }

    by_size = {f"{lo}-{hi}": counts([r for r in rows if lo <= r["inter_ocular_px"] < hi]) for lo, hi in SIZE_BINS}
    return {"all": counts(rows), "by_inter_ocular_px": by_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="hide", help="comma list of hide, generate")
    parser.add_argument("--thresholds", default="0.4", help="comma list of detection thresholds")
    parser.add_argument("--conditions", default="original", help=f"comma list of {', '.join(CONDITIONS)}, or all")
    parser.add_argument("--rotations", default="0", help="detect.rotations: 0,90,180,270 or all [0]")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="any other setting, as in a TOML file, e.g. --set detect.scale=2 (repeatable)")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--limit", type=int, default=None, help="photos per set (default: all)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    parser.add_argument("--all-faces", action="store_true",
                        help="keep every face's row in the JSON (default: only those not fully hidden)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"hide", "generate"}:
        parser.error("--modes takes hide and/or generate")
    conditions = list(CONDITIONS) if args.conditions == "all" else [c.strip() for c in args.conditions.split(",")]
    if set(conditions) - set(CONDITIONS):
        parser.error(f"--conditions takes {', '.join(CONDITIONS)} or all")
    photos = annotated_photos(args.data, args.sets.split(","), args.limit)
    try:
        rotations = list(rotations_from_text(args.rotations))
    except ValueError as exc:
        parser.error(f"--rotations: {exc}")
    try:
        settings = dict(override_from_text(item) for item in args.settings)
    except ValueError as exc:
        parser.error(f"--set: {exc}")

    runs = []
    for mode in modes:
        for threshold in (float(t) for t in args.thresholds.split(",")):
            config = load_config(overrides={**settings, "replace.mode": "solid" if mode == "hide" else "generate",
                                            "detect.threshold": threshold, "detect.rotations": rotations})  # fmt: skip
            anonymizer = Anonymizer(config)
            for condition in conditions:
                started = time.perf_counter()
                rows = {name: [] for name in args.sets.split(",")}
                for name, photo in photos:
                    rows[name].append(measure(anonymizer, mode, photo, condition))
                seconds = time.perf_counter() - started
                summary = {name: summarise(set_rows) for name, set_rows in rows.items()}
                summary["all"] = summarise([row for set_rows in rows.values() for row in set_rows])
                not_hidden = {name: [row for row in set_rows if row["verdict"] != "hidden"]
                              for name, set_rows in rows.items()}  # fmt: skip
                run = {"mode": mode, "threshold": threshold, "condition": condition, "rotations": rotations,
                       "settings": settings, "seconds": round(seconds, 1), "summary": summary,
                       "not_hidden": not_hidden}  # fmt: skip
                if args.all_faces:
                    run["faces"] = rows
                runs.append(run)
                print_run(runs[-1])

    stamp = datetime.now(timezone.utc)
    out = args.out or ROOT / "benchmarks" / "results" / f"face-recall-{stamp:%Y-%m-%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"when": stamp.isoformat(), "machine": describe_device("cpu"),
                               "data": os.path.relpath(args.data, ROOT), "runs": runs}, indent=1))  # fmt: skip
    print(f"wrote {out}")
    return 0


def print_run(run: dict) -> None:
    """One table per run: recall per set and per size bin, then the faces not fully hidden."""
    extra = "".join(f", {key} = {value}" for key, value in run["settings"].items())
    print(f"\n{run['mode']} mode, {run['condition']}, detection threshold {run['threshold']}, "
          f"rotations {','.join(map(str, run['rotations']))}{extra} ({run['seconds']} s)")
    print(f"{'set':<12}{'faces':>7}{'hidden':>8}{'partly':>8}{'missed':>8}{'recall':>8}   by inter-ocular px")
    for name, summary in run["summary"].items():
        overall = summary["all"]
        sizes = "  ".join(
            f"{bin_}: {c['hidden']}/{c['faces']}" for bin_, c in summary["by_inter_ocular_px"].items() if c["faces"]
        )
        print(f"{name:<12}{overall['faces']:>7}{overall['hidden']:>8}{overall['partly']:>8}{overall['missed']:>8}"
              f"{overall['recall']:>8.3f}   {sizes}")  # fmt: skip
    not_hidden = [(name, row) for name, rows in run["not_hidden"].items() for row in rows]
    for name, row in not_hidden[:SHOW_NOT_HIDDEN]:
        print(f"  {row['verdict']:<7} {name}/{row['photo']}: share {row['share']:.3f}, "
              f"inter-ocular {row['inter_ocular_px']} px, faces found {row['faces_found']}")  # fmt: skip
    if len(not_hidden) > SHOW_NOT_HIDDEN:
        print(f"  ... and {len(not_hidden) - SHOW_NOT_HIDDEN} more (in the JSON)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:  # a bad --set value: one line, as the CLI says it
        sys.exit(f"face_recall: {exc}")
