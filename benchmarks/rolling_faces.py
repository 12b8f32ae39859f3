"""Face recall in video while the head rolls: is a tracked face still hidden when it tilts past
what the upright detector finds?

    python benchmarks/rolling_faces.py [--clips talking_512_katiehill.mp4,...] [--motions spin,tilt]
                                       [--shrink S] [--mode hide|generate] [--set KEY=VALUE ...] [--out FILE]

Each shared face clip is turned frame by frame about its centre, as a camera rolling around a
talking person would show it (or a person lying down, a robot's tilted camera):

* ``spin``: one full turn over the clip (about 1.8 degrees a frame on 200 frames);
* ``tilt``: back and forth between -75 and +75 degrees, two periods over the clip.

``--shrink S`` (< 1) scales each turned frame by S and centres it on a black 1280x720 canvas:
small faces in a larger picture (0.25: the GRID speakers' faces ~25 px wide).

The ground truth is each frame's 68 landmarks found on the *upright* frame (CenterFace + dlib's
predictor, where both work well), turned with the frame. The turned clip goes through
``Anonymizer`` frame by frame, and a frame counts its face as hidden when at least 99 % of the inner
face (brows, eyes, nose, mouth) was replaced (``streamanon.metrics.coverage``): in the hide modes
(``--mode hide``, the default) the region they replace from the tracker's boxes; in ``generate``
mode the pixels that moved by more than 2 levels, averaged over a tenth of the eye distance.
Printed per clip and motion: frames, hidden, partly, missed, the longest run of frames not fully
hidden, and the roll of the first frame missed. JSON to ``benchmarks/results/rolling-faces-*.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from streamanon.bench.environment import describe_device
from streamanon.config import load_config, override_from_text
from streamanon.errors import UserError
from streamanon.faces.detect import CenterFaceDetector
from streamanon.faces.landmarks import LandmarkPredictor
from streamanon.metrics.coverage import change_window, changed_pixels, hidden_region, hidden_share, verdict
from streamanon.pipeline import Anonymizer
from streamanon.types import Frame

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
CLIPS = ("talking_512_katiehill.mp4", "talking_512_alexandriaocasiocortez.mp4", "grid_speaker_00.mpg")
TILT_DEGREES = 75.0
CANVAS = (1280, 720)  # width, height for --shrink


def roll_of(motion: str, index: int, count: int) -> float:
    """The camera's roll (degrees, counter-clockwise on screen) at frame ``index`` of ``count``."""
    if motion == "spin":
        return 360.0 * index / count
    if motion == "tilt":
        return TILT_DEGREES * math.sin(2.0 * math.pi * 2.0 * index / count)
    raise ValueError(f"unknown motion {motion!r} (spin or tilt)")


def turned(image: np.ndarray, points: np.ndarray, degrees: float, shrink: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``image`` turned by ``degrees`` about its centre (same size, black corners) and ``points`` with
    it; with ``shrink`` < 1 also scaled by it and centred on a black ``CANVAS``."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), degrees, 1.0)
    out = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    points = points @ matrix[:, :2].T + matrix[:, 2]
    if shrink == 1.0:
        return out, points
    small = cv2.resize(out, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((CANVAS[1], CANVAS[0], 3), np.uint8)
    y0, x0 = (CANVAS[1] - small.shape[0]) // 2, (CANVAS[0] - small.shape[1]) // 2
    canvas[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return canvas, points * (small.shape[1] / width, small.shape[0] / height) + (x0, y0)


def upright_truth(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    """The largest face's 68 landmarks in each upright frame (None where none is found)."""
    detector, predictor = CenterFaceDetector(), LandmarkPredictor()
    truth = []
    for image in frames:
        found = detector(image)
        if len(found) == 0:
            truth.append(None)
            continue
        largest = int(np.argmax((found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])))
        points = predictor.predict(image, found.boxes[largest : largest + 1], found.keypoints[largest : largest + 1])
        truth.append(points[0])
    return truth


def read_frames(path: Path) -> tuple[list[np.ndarray], float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], fps


def run_motion(anonymizer: Anonymizer, frames: list[np.ndarray], fps: float, truth: list, motion: str,
               shrink: float = 1.0) -> dict:
    """One clip turned by ``motion`` through ``anonymizer``; per-frame verdicts and a summary."""
    anonymizer.reset()
    verdicts, rolls = [], []
    for index, (image, points) in enumerate(zip(frames, truth)):
        roll = roll_of(motion, index, len(frames))
        shown, moved = turned(image, points if points is not None else np.zeros((68, 2)), roll, shrink)
        out, _ = anonymizer.process_frame(Frame(shown, index, index, 1 / Fraction(fps).limit_denominator(1001)))
        if points is None:
            continue  # no ground truth for this frame
        if anonymizer.config.mode == "generate":
            share = hidden_share(changed_pixels(shown, out, window=change_window(moved)), moved)
        else:
            boxes = [track.cover_box for track in anonymizer.tracker.tracks]
            share = hidden_share(hidden_region(boxes, *shown.shape[:2], anonymizer.config.replace), moved)
        verdicts.append(verdict(share))
        rolls.append(round(roll, 1))
    longest = run = 0
    for v in verdicts:
        run = run + 1 if v != "hidden" else 0
        longest = max(longest, run)
    first_missed = next((r for v, r in zip(verdicts, rolls) if v != "hidden"), None)
    return {"motion": motion, "frames": len(verdicts), "hidden": verdicts.count("hidden"),
            "partly": verdicts.count("partly"), "missed": verdicts.count("missed"), "longest_not_hidden": longest,
            "first_not_hidden_roll": first_missed,
            "not_hidden_rolls": [r for v, r in zip(verdicts, rolls) if v != "hidden"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", default=",".join(CLIPS), help="comma list of clip names under --videos")
    parser.add_argument("--videos", type=Path, default=VIDEOS)
    parser.add_argument("--motions", default="spin,tilt", help="comma list of spin, tilt")
    parser.add_argument("--shrink", type=float, default=1.0,
                        help="scale the turned frames by this, in (0, 1], on a 1280x720 canvas")
    parser.add_argument("--mode", choices=("hide", "generate"), default="hide")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="any setting, as in a TOML file, e.g. --set detect.every=3 (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    motions = [m.strip() for m in args.motions.split(",") if m.strip()]
    if not motions or set(motions) - {"spin", "tilt"}:
        parser.error("--motions takes spin and/or tilt")
    if not 0.0 < args.shrink <= 1.0:
        parser.error("--shrink takes a factor in (0, 1]")
    try:
        settings = dict(override_from_text(item) for item in args.settings)
    except ValueError as exc:
        parser.error(f"--set: {exc}")
    mode = "solid" if args.mode == "hide" else "generate"
    anonymizer = Anonymizer(load_config(overrides={**settings, "replace.mode": mode}))
    rows = []
    started = time.perf_counter()
    print(f"{'clip':<40}{'motion':>7}{'frames':>7}{'hidden':>7}{'partly':>7}{'missed':>7}{'longest':>8}  first roll")
    for name in [c.strip() for c in args.clips.split(",") if c.strip()]:
        path = args.videos / name
        if not path.is_file():
            parser.error(f"no clip {path}")
        frames, fps = read_frames(path)
        truth = upright_truth(frames)
        for motion in motions:
            row = {"clip": name, **run_motion(anonymizer, frames, fps, truth, motion, args.shrink)}
            rows.append(row)
            print(f"{name:<40}{motion:>7}{row['frames']:>7}{row['hidden']:>7}{row['partly']:>7}{row['missed']:>7}"
                  f"{row['longest_not_hidden']:>8}  {row['first_not_hidden_roll']}")  # fmt: skip
    totals = {key: sum(r[key] for r in rows) for key in ("frames", "hidden", "partly", "missed")}
    print(f"all: {totals['hidden']}/{totals['frames']} frames hidden ({time.perf_counter() - started:.0f} s)")
    stamp = datetime.now(timezone.utc)
    out = args.out or ROOT / "benchmarks" / "results" / f"rolling-faces-{stamp:%Y-%m-%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"when": stamp.isoformat(), "machine": describe_device("cpu"), "settings": settings,
                               "shrink": args.shrink, "mode": args.mode,
                               "videos": os.path.relpath(args.videos, ROOT), "totals": totals, "rows": rows},
                              indent=1))  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:  # a bad --set value: one line, as the CLI says it
        sys.exit(f"rolling_faces: {exc}")
