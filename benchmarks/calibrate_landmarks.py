"""Calibrate the CenterFace -> dlib box conversion of ``streamanon.faces.landmarks``.

For every 300-W image (HELEN test, AFW) with a 68-point ``.pts`` ground truth, CenterFace
runs on the image and the detection that best overlaps the ground-truth face is kept.
Then the NME (mean point error / outer-eye-corner distance) of dlib's 68-point predictor
is measured for the raw CenterFace box and over a grid of square box conversions
and over small grids of the box-only and the keypoint conversions, picking the best mean
of the two sets' mean NMEs (HELEN is mostly frontal, AFW in the wild; two parameters
on a coarse grid leave little room to overfit, and both sets are reported separately).

    python benchmarks/calibrate_landmarks.py [--data ../shared/data] [--out results.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamanon.faces.detect import CenterFaceDetector, box_iou  # noqa: E402
from streamanon.faces.landmarks import LandmarkPredictor, nme, read_pts  # noqa: E402


def load_set(folder: Path, detector: CenterFaceDetector) -> list[dict]:
    """Images, ground truth and the matched CenterFace box of one 300-W subset."""
    items = []
    for pts in sorted(folder.glob("*.pts")):
        truth = read_pts(pts)
        image = cv2.cvtColor(cv2.imread(str(pts.with_suffix(".jpg"))), cv2.COLOR_BGR2RGB)
        found = detector(image)
        gt_box = np.concatenate([truth.min(0), truth.max(0)])
        match = keypoints = None
        if len(found):
            iou = box_iou(found.boxes, gt_box[None])[:, 0]
            if iou.max() > 0.3:
                match = found.boxes[int(iou.argmax())]
                keypoints = found.keypoints[int(iou.argmax())]
        items.append({"name": pts.stem, "image": image, "truth": truth, "box": match, "keypoints": keypoints})
    return items


def evaluate(items: list[dict], predictor: LandmarkPredictor) -> np.ndarray:
    """NME of every matched face."""
    errors = []
    for item in items:
        if item["box"] is None:
            continue
        predicted = predictor.predict(item["image"], item["box"][None], item["keypoints"][None])[0]
        errors.append(float(nme(predicted, item["truth"])))
    return np.asarray(errors)


def summary(errors: np.ndarray) -> dict:
    return {
        "mean": round(float(errors.mean()), 4),
        "median": round(float(np.median(errors)), 4),
        "fail_0.1": round(float((errors > 0.1).mean()), 4),
        "n": int(len(errors)),
    }


def fit(sets: dict, conversion: str, grid: dict[str, list[float]]) -> dict:
    """Grid search; the objective is the mean of the per-set mean NMEs (HELEN and AFW)."""
    best = (np.inf, {})
    for values in itertools.product(*grid.values()):
        params = {k: round(float(v), 3) for k, v in zip(grid, values)}
        predictor = LandmarkPredictor(conversion=conversion, **params)
        errs = {name: evaluate(items, predictor).mean() for name, items in sets.items()}
        objective = float(np.mean(list(errs.values())))
        print(f"  {conversion} {params}: " + "  ".join(f"{n} {e:.4f}" for n, e in errs.items()), flush=True)
        best = min(best, (objective, params), key=lambda x: x[0])
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    detector = CenterFaceDetector()
    t0 = time.perf_counter()
    sets = {name: load_set(args.data / "landmarks68" / name, detector) for name in ("helen_test", "afw")}
    for name, items in sets.items():
        matched = sum(item["box"] is not None for item in items)
        print(f"{name}: {len(items)} faces, {matched} matched to a CenterFace box")
    print(f"detection: {time.perf_counter() - t0:.0f} s")

    box_best = fit(sets, "box", {"box_scale": [0.85, 0.9, 0.95, 1.0, 1.05], "box_shift_y": [0.0, 0.04, 0.08]})
    kp_best = fit(sets, "keypoints", {"kp_scale": [0.8, 0.9, 1.0], "kp_shift": [-0.2, -0.1, 0.0]})
    rows = {
        "none: CenterFace box as the dlib rect": LandmarkPredictor(conversion="none"),
        "box: upright square 1.00, shift 0.00": LandmarkPredictor(conversion="box", box_scale=1.0, box_shift_y=0.0),
        f"box: calibrated {box_best}": LandmarkPredictor(conversion="box", **box_best),
        f"keypoints: calibrated {kp_best}": LandmarkPredictor(conversion="keypoints", **kp_best),
        "defaults of streamanon.faces.landmarks": LandmarkPredictor(),
    }
    import dlib
    import onnxruntime

    results: dict = {
        "versions": {"python": platform.python_version(), "dlib": dlib.__version__, "onnxruntime": onnxruntime.__version__},
        "rows": {},
        "box_best": box_best,
        "kp_best": kp_best,
    }
    print(results["versions"])
    for label, predictor in rows.items():
        stats = {name: summary(evaluate(items, predictor)) for name, items in sets.items()}
        results["rows"][label] = stats
        print(f"{label}: " + "  ".join(f"{n} {s['mean']:.4f} (fail {100 * s['fail_0.1']:.1f}%)" for n, s in stats.items()))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
