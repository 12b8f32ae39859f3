"""Whole-job throughput: median fps of `anonymize_file` over repeated runs of a clip.

    python benchmarks/bench_file.py ../shared/data/videos/street_1080p_multi.mp4 --mode blur --repeat 3

Prints a table and writes JSON (device, versions, every run, median) to benchmarks/results/.
Timing covers decode + detect + track + replace + encode, i.e. what a user waits for.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import av
import cv2
import numpy as np
import onnxruntime

import streamanon
from streamanon import anonymize_file, load_config


def device_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"CPU: {cpu}, {os.cpu_count()} cores"


def bench(clip: Path, mode: str, repeat: int, extra: dict) -> dict:
    config = load_config(overrides={"replace.mode": mode, **extra})
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            out = Path(tmp) / f"out_{i}.mp4"
            started = time.perf_counter()
            summary = anonymize_file(clip, out, config)
            seconds = time.perf_counter() - started
            runs.append({"seconds": seconds, "frames": summary.frames, "faces": summary.faces,
                         "fps": summary.frames / seconds})
    return {
        "clip": clip.name,
        "mode": mode,
        "overrides": extra,
        "runs": runs,
        "median_fps": statistics.median(r["fps"] for r in runs),
        "frames": runs[0]["frames"],
        "faces_per_frame": runs[0]["faces"] / max(1, runs[0]["frames"]),
    }


def _override(item: str) -> tuple[str, object]:
    """``key=value`` with the value read as TOML (3 -> int, 0.5 -> float, true -> bool, else text)."""
    from streamanon.config import override_from_text

    try:
        return override_from_text(item)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--mode", action="append", help="mode(s) to run (default: blur)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "file_fps.json")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set detect.every=3 (repeatable)")
    args = parser.parse_args()
    extra = dict(_override(item) for item in args.settings)
    results = [bench(clip, mode, args.repeat, extra) for clip in args.clips for mode in (args.mode or ["blur"])]
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_description(),
        "versions": {
            "streamanon": streamanon.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "opencv": cv2.__version__, "onnxruntime": onnxruntime.__version__, "av": av.__version__,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"device: {report['device']}")
    print(f"{'clip':40s} {'mode':9s} {'frames':>6s} {'faces/fr':>8s} {'median fps':>10s}  runs  overrides")
    for r in results:
        fps_runs = " ".join(f"{run['fps']:.1f}" for run in r["runs"])
        print(f"{r['clip']:40s} {r['mode']:9s} {r['frames']:6d} {r['faces_per_frame']:8.2f} {r['median_fps']:10.2f}  "
              f"{fps_runs}  {r['overrides'] or ''}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
