"""The landmark stage alone: dlib's predictor against its PyTorch port, per frame of N faces.

    python benchmarks/bench_landmarks.py                      # dlib and torch on the CPU
    python benchmarks/bench_landmarks.py --device cuda        # and torch on the GPU

The stage as the pipeline runs it (``LandmarkPredictor.predict`` on one frame and its CenterFace
detections: cut each face's predictor crop, run the cascade, map the points back), and for the
PyTorch port also with the crops sampled on the frame already on its device (``frame=``, the
pipeline's layout when the detector runs on PyTorch: no crops cut on the host). The frames are
the synthetic scenes of ``streamanon bench`` (real UTKFace crops on a grid, 1920x1080), detected
once. Each case's largest distance from dlib's points is recorded (the CPU port on host crops: 0). Median over repeats of the per-frame median; JSON in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from streamanon.bench.environment import describe_device, device_slug, sync_function, versions
from streamanon.bench.run import shared_data_dir
from streamanon.bench.scenes import SceneSpec, pick_crops, planted_boxes, render_frames
from streamanon.errors import UserError
from streamanon.faces.detect import CenterFaceDetector
from streamanon.faces.landmarks import LandmarkPredictor

RESULTS = Path(__file__).resolve().parent / "results"


def scene_frame(width: int, height: int, faces: int, faces_dir: Path) -> np.ndarray:
    import cv2

    spec = SceneSpec(width, height, faces)
    crops = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in pick_crops(faces_dir, faces)]
    return render_frames(spec, crops, planted_boxes(spec, 1))[0]


def time_predict(predict, frames: int, warmup: int, repeats: int, sync) -> dict:
    """Median and p99 ms per frame (median over repeats) of ``predict()`` on one frame."""
    medians, p99s = [], []
    for _ in range(repeats):
        samples = []
        for i in range(warmup + frames):
            start = time.perf_counter()
            predict()
            if sync is not None:
                sync()
            if i >= warmup:
                samples.append(time.perf_counter() - start)
        medians.append(statistics.median(samples))
        p99s.append(float(np.percentile(samples, 99)))
    return {"ms_per_frame_p50": statistics.median(medians) * 1e3, "ms_per_frame_p99": statistics.median(p99s) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to time the torch port there as well")
    parser.add_argument("--faces-dir", type=Path, default=None, help="face crops [../shared/data/faces/utkface]")
    parser.add_argument("--resolution", default="1920x1080")
    parser.add_argument("--face-counts", default="1,2,4,8")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    width, height = (int(v) for v in args.resolution.split("x"))
    counts = [int(v) for v in args.face_counts.split(",")]
    faces_dir = args.faces_dir or shared_data_dir() / "faces" / "utkface"
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    backends = [("dlib", "cpu"), ("torch", "cpu")] + ([("torch", args.device)] if kind == "cuda" else [])
    cases = []  # (label, predictor, device the frame is sampled on or None, what to call before the clock)
    for backend, device in backends:
        start = time.perf_counter()
        predictor = LandmarkPredictor(backend=backend, device=device)
        sync = sync_function("cuda" if device.startswith("cuda") else "cpu")
        print(f"loaded {predictor.where} in {time.perf_counter() - start:.1f} s", flush=True)
        cases.append((predictor.where, predictor, None, sync))
        if backend == "torch":
            cases.append((f"{predictor.where}, frame", predictor, device, sync))
    detector = CenterFaceDetector()
    when = datetime.now(timezone.utc)
    report = {
        "schema": "streamanon.bench.landmarks/1",
        "when": when.isoformat(timespec="seconds"),
        "device": describe_device(kind),
        "versions": versions(),
        "settings": {"resolution": args.resolution, "frames": args.frames, "warmup": args.warmup,
                     "repeats": args.repeats},  # fmt: skip
        "unit": "milliseconds per frame (all faces), median over repeats of the per-frame p50 / p99",
        "rows": [],
    }
    out = args.out or RESULTS / f"landmarks-{device_slug(kind)}-{when:%Y-%m-%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for count in counts:
        frame = scene_frame(width, height, count, faces_dir)
        found = detector(frame)
        if len(found) != count:
            raise UserError(f"the detector found {len(found)} of the {count} planted faces")
        reference = cases[0][1].predict(frame, found.boxes, found.keypoints)
        for label, predictor, frame_device, sync in cases:
            tensor = None if frame_device is None else torch.from_numpy(frame).to(frame_device)  # uploaded once

            def predict(predictor=predictor, tensor=tensor):
                return predictor.predict(frame, found.boxes, found.keypoints, frame=tensor)

            drift = float(np.abs(predict() - reference).max())
            timing = time_predict(predict, args.frames, args.warmup, args.repeats, sync)
            row = {"backend": label, "faces": count, "max_px_from_dlib": drift, **timing}
            report["rows"].append(row)
            out.write_text(json.dumps(report, indent=2) + "\n")  # after every row: a cut-off run keeps what it has
            print(f"{label:>24} {count} faces: {timing['ms_per_frame_p50']:7.2f} ms/frame p50 "
                  f"({timing['ms_per_frame_p50'] / count:6.2f} ms/face), p99 {timing['ms_per_frame_p99']:7.2f} ms, "
                  f"max {drift:.2f} px from dlib", flush=True)  # fmt: skip
    print(f"\nLandmark stage, {width}x{height}, {report['device']['description']}")
    print(f"{'backend':>24} " + " ".join(f"{c:>4} faces" for c in counts) + "   (ms per frame, p50)")
    for label, *_ in cases:
        cells = [r["ms_per_frame_p50"] for r in report["rows"] if r["backend"] == label]
        print(f"{label:>24} " + " ".join(f"{v:10.2f}" for v in cells))
    print(f"-> {out}")


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:  # no CUDA, no face crops: one line, not a traceback
        sys.exit(f"error: {exc}")
