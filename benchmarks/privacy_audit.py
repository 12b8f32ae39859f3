"""Privacy audit of generate mode: anonymize every shared face video, then let ``streamanon eval``
look for leak frames (faces dlib still matches to the original, distance < 0.6) and identity switches.

    python benchmarks/privacy_audit.py [--videos ../shared/data/videos] [--out benchmarks/results]
                                       [--sensor-noise SIGMA] [-- more options for 'streamanon file']

``--sensor-noise`` audits a noisy camera instead: each clip first gets simulated sensor noise
(:func:`add_sensor_noise`) and is encoded near-losslessly, and that clip is what is anonymized
and evaluated against.

Runs the installed ``streamanon`` commands (whole jobs, default settings), keeps the anonymized
clips and eval JSON in a temporary folder, and writes one JSON summary:
per clip the faces evaluated, leak frames, identity switches and the mean embedding distance,
and the totals that README's privacy audit quotes. About 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
# The clips with one talking face each (the street clip has crowds of small faces eval cannot embed well).
PATTERNS = ("talking_*.mp4", "grid_speaker_*.mpg")


def _streamanon() -> list[str]:
    found = shutil.which("streamanon")
    return [found] if found else [sys.executable, "-m", "streamanon"]


def add_sensor_noise(src: Path, dst: Path, sigma: float, seed: int = 0) -> None:
    """Write ``src``'s video with simulated camera noise to ``dst`` (H.264 4:4:4, CRF 4: the noise
    survives the encode). Per pixel: a grey component of deviation ``sigma`` plus a colour one of
    ``0.4 sigma`` per channel, blurred by 0.6 px as a demosaicked sensor's is, ~0.8 ``sigma`` in
    all on each channel. Audio and other streams are left out: only faces matter here."""
    import av
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    with av.open(str(src)) as source, av.open(str(dst), "w") as sink:
        video = source.streams.video[0]
        stream = sink.add_stream("libx264", rate=video.average_rate or 25)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv444p"
        stream.options = {"crf": "4", "preset": "veryfast"}
        for frame in source.decode(video=0):
            image = frame.to_ndarray(format="rgb24").astype(np.float32)
            grain = rng.normal(0.0, sigma, image.shape[:2])[..., None] + rng.normal(0.0, 0.4 * sigma, image.shape)
            noisy = np.clip(np.rint(image + cv2.GaussianBlur(grain, (0, 0), 0.6)), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(noisy, format="rgb24")):
                sink.mux(packet)
        for packet in stream.encode():
            sink.mux(packet)


def audit_clip(clip: Path, work: Path, extra: list[str]) -> dict:
    """Anonymize one clip in generate mode and evaluate it; the clip's figures."""
    anonymized = work / f"{clip.stem}_generated.mp4"
    report = work / f"{clip.stem}_eval.json"
    started = time.perf_counter()
    subprocess.run([*_streamanon(), "file", str(clip), str(anonymized), "--mode", "generate", "--quiet", *extra],
                   check=True)  # fmt: skip
    seconds = time.perf_counter() - started
    subprocess.run([*_streamanon(), "eval", str(clip), str(anonymized), "--json", str(report), "--quiet"], check=True)
    row = json.loads(report.read_text())["rows"][0]
    return {
        "clip": clip.name,
        "frames": row["frames"],
        "faces": row["faces"],
        "leak_frames": row["coverage"]["leak_frames"],
        "identity_switch_frames": row["temporal"].get("identity_switch_frames", []),
        "distance_mean": row["metrics"]["distance"]["mean"],
        # Luma noise inside the face, output / input (None on clean clips: nothing to match).
        "noise_ratio_mean": (row["metrics"].get("noise_ratio") or {}).get("mean"),
        "anonymize_seconds": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the anonymized clips and eval JSON here.")
    parser.add_argument("--sensor-noise", type=float, default=0.0, metavar="SIGMA",
                        help="Audit noisy copies of the clips (grey-level deviation of the simulated sensor noise).")
    parser.add_argument("extra", nargs="*", help="More options for 'streamanon file' (after --).")
    args = parser.parse_args()
    clips = sorted(p for pattern in PATTERNS for p in args.videos.glob(pattern))
    if not clips:
        print(f"no face videos under {args.videos}", file=sys.stderr)
        return 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="privacy_audit_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, clip in enumerate(clips):
        if args.sensor_noise > 0:
            noisy = work / f"{clip.stem}_noisy.mp4"
            add_sensor_noise(clip, noisy, args.sensor_noise, seed=index)
            clip = noisy
        rows.append(audit_clip(clip, work, args.extra))
        r = rows[-1]
        print(f"{r['clip']}: {r['faces']} faces, {len(r['leak_frames'])} leak frames, "
              f"{len(r['identity_switch_frames'])} identity switches, "
              f"mean distance {r['distance_mean']:.3f}")  # fmt: skip
    totals = {
        "clips": len(rows),
        "faces": sum(r["faces"] for r in rows),
        "leak_frames": sum(len(r["leak_frames"]) for r in rows),
        "identity_switches": sum(len(r["identity_switch_frames"]) for r in rows),
        "distance_mean_range": [min(r["distance_mean"] for r in rows), max(r["distance_mean"] for r in rows)],
    }
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"privacy-audit-{stamp}.json"
    summary = {"date": stamp, "options": args.extra, "sensor_noise": args.sensor_noise, "totals": totals, "clips": rows}
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{totals['clips']} clips, {totals['faces']} faces: {totals['leak_frames']} leak frames, "
          f"{totals['identity_switches']} identity switches -> {path}")  # fmt: skip
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
