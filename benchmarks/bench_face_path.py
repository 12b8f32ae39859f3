"""The generate-mode face path alone: generator + photometric steps + paste-back, per frame.

    python benchmarks/bench_face_path.py --device cuda --composite host,device --backend compile
    python benchmarks/bench_face_path.py --device cpu --resolutions 640x360 --face-counts 1,4
    python benchmarks/bench_face_path.py --device cpu --composite host --sensor-noise 6   # a grainy camera

This is the "GPU-pipeline time per face" of issue #5's target (<= 5 ms on an H100, batch of
faces): the stages after alignment, on real aligned faces (the held-out shard of ``streamanon
train prepare``, else the canonical landmark template on a smooth image), planted on a grid as in
``streamanon bench``'s synthetic scenes. It needs neither dlib nor PyAV, so it runs on the GPU
machine as it is. Every stage is synchronised (``torch.cuda.synchronize``) before its clock is
read; p50/p95/p99 per frame and per face, median over repeats. Writes JSON to benchmarks/results/.

The paste matches the frame's sensor noise (``generate.match_noise``) unless ``--no-match-noise``;
the scene's frame is clean (the noise is then measured but none is added) unless
``--sensor-noise`` gives it grain, where the paste measures the face too and adds the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from streamanon.bench.environment import describe_device, device_slug, sync_function, versions
from streamanon.bench.scenes import face_side, grid
from streamanon.bench.stats import median_of_summaries, summarize_stage
from streamanon.config import PhotometricConfig, ReplaceConfig
from streamanon.errors import UserError
from streamanon.faces.align import face_mask, template
from streamanon.generate.compose import FaceCompositor
from streamanon.generate.guard import postprocessings
from streamanon.generate.runtime import load_generator
from streamanon.photometric import get_backend
from streamanon.timing import StageTimer
from streamanon.types import AlignedFace

STAGES = ("generate", "photometric", "composite")
TARGET_MS_PER_FACE = 5.0  # issue #5, on an H100
RESULTS = Path(__file__).resolve().parent / "results"


def load_faces(data: Path | None, count: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (crop, landmarks) pairs: held-out faces of prepared shards, else a template face."""
    if data is not None and (data / "meta.json").is_file():
        from streamanon.train.dataset import FaceShardDataset

        faces = FaceShardDataset(data, "val")
        if faces.resolution == size:
            return [faces.raw(i % len(faces)) for i in range(count)]
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(70, 190, (size, size, 3), dtype=np.uint8), (0, 0), 3)
    return [(image, template(size).astype(np.float32))] * count


def scene(width: int, height: int, faces: list[tuple[np.ndarray, np.ndarray]],
          sensor_noise: float = 0.0) -> tuple[np.ndarray, list[AlignedFace]]:  # fmt: skip
    """A frame and its faces on a grid, each crop's face ``face_side`` pixels across in the frame;
    ``sensor_noise``: the frame's Gaussian grain (grey levels, fixed seed)."""
    from streamanon.bench.scenes import SceneSpec

    size = faces[0][0].shape[0]
    rows, cols = grid(len(faces), width, height)
    side = face_side(SceneSpec(width, height, len(faces)))
    frame = cv2.resize(faces[0][0], (width, height), interpolation=cv2.INTER_LINEAR)
    if sensor_noise > 0:
        grain = np.random.default_rng(0).normal(0.0, sensor_noise, frame.shape)
        frame = np.clip(np.rint(frame + grain), 0, 255).astype(np.uint8)
    aligned = []
    for k, (crop, landmarks) in enumerate(faces):
        r, c = divmod(k, cols)
        centre = np.array([(c + 0.5) * width / cols, (r + 0.5) * height / rows])
        scale = size / side  # frame -> crop
        matrix = np.array([[scale, 0.0, size / 2 - scale * centre[0]], [0.0, scale, size / 2 - scale * centre[1]]])
        aligned.append(AlignedFace(k, crop, matrix, landmarks, face_mask(landmarks, size)))
    return frame, aligned


def time_case(compositor: FaceCompositor, frame: np.ndarray, aligned: list[AlignedFace], latents: np.ndarray,
              frames: int, warmup: int, repeats: int, sync) -> dict:  # fmt: skip
    ways = ["full"] * len(aligned)
    summaries = {stage: [] for stage in (*STAGES, "total")}
    for _ in range(repeats):
        timer = StageTimer(sync)
        for _ in range(warmup):
            compositor(frame, frame.copy(), aligned, latents, ways, timer)
        timer.take()
        per_stage: dict[str, list[float]] = {stage: [] for stage in summaries}
        for _ in range(frames):
            compositor(frame, frame.copy(), aligned, latents, ways, timer)
            took = timer.take()
            for stage in STAGES:
                per_stage[stage].append(took.get(stage, 0.0))
            per_stage["total"].append(sum(took.get(stage, 0.0) for stage in STAGES))
        counts = [len(aligned)] * frames
        for stage, values in per_stage.items():
            summaries[stage].append(summarize_stage(values, counts))
    return {stage: median_of_summaries(values) for stage, values in summaries.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto", help="generator backend: auto, eager, compile, tensorrt")
    parser.add_argument("--composite", default="host,device", help="comma-separated: host, device")
    parser.add_argument("--weights", default=None, help="generator weights [the shipped ones]")
    parser.add_argument("--data", type=Path, default=Path("data/faces128"), help="prepared shards (faces)")
    parser.add_argument("--resolutions", default="640x360,1280x720,1920x1080")
    parser.add_argument("--face-counts", default="1,2,4,8")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sensor-noise", type=float, default=0.0, help="grain of the scene's frame (grey levels)")
    parser.add_argument("--no-match-noise", action="store_true", help="paste without matching the frame's noise")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    resolutions = [tuple(int(v) for v in item.split("x")) for item in args.resolutions.split(",")]
    counts = [int(v) for v in args.face_counts.split(",")]
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    generator = load_generator(args.weights, device=args.device, backend=args.backend, max_batch=max(counts))
    postprocess = postprocessings(get_backend(args.device), PhotometricConfig())
    pool = load_faces(args.data, max(counts), generator.resolution)
    sync = sync_function(kind)
    when = datetime.now(timezone.utc)
    report = {
        "schema": "streamanon.bench.face_path/1",
        "when": when.isoformat(timespec="seconds"),
        "device": describe_device(kind),
        "versions": versions(),
        "generator": {"backend": generator.backend_name, "dtype": str(generator.dtype), "weights": args.weights},
        "faces": "held-out shard" if (args.data / "meta.json").is_file() else "template",
        "settings": {"frames": args.frames, "warmup": args.warmup, "repeats": args.repeats,
                     "sensor_noise": args.sensor_noise, "match_noise": not args.no_match_noise},
        "target_ms_per_face": TARGET_MS_PER_FACE,
        "unit": "seconds; percentiles per frame and per face, median over repeats",
        "rows": [],
    }
    out = args.out or RESULTS / f"face-path-{device_slug(kind)}-{when:%Y-%m-%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for composite in args.composite.split(","):
        compositor = FaceCompositor(generator, postprocess, ReplaceConfig().feather, composite,
                                    match_noise=not args.no_match_noise)
        for width, height in resolutions:
            for count in counts:
                frame, aligned = scene(width, height, pool[:count], args.sensor_noise)
                latents = generator.latents(list(range(count))).cpu().numpy()
                stages = time_case(compositor, frame, aligned, latents, args.frames, args.warmup, args.repeats, sync)
                report["rows"].append({"composite": compositor.where, "width": width, "height": height,
                                       "faces": count, "stages": stages})  # fmt: skip
                # Written after every row: a run stopped at a leased machine's time limit keeps what it measured.
                out.write_text(json.dumps(report, indent=2) + "\n")
                total = stages["total"]
                print(f"{compositor.where:>8} {width}x{height} {count} faces: "
                      f"{total['per_face']['p50'] * 1e3:7.2f} ms/face p50, {total['per_frame']['p50'] * 1e3:7.2f} "
                      f"ms/frame p50, p99 {total['per_frame']['p99'] * 1e3:7.2f} ms", flush=True)  # fmt: skip
    print_table(report["rows"], generator.backend_name, report["device"]["description"])
    print(f"-> {out}")


def print_table(rows: list[dict], backend: str, device: str) -> None:
    print(f"\nGenerate-mode face path (generator [{backend}] + photometric + paste), {device}")
    print(f"{'paste on':>9} {'frame':>10} {'faces':>5} {'generate':>9} {'photom.':>9} {'paste':>9} "
          f"{'ms/face':>8} {'ms/frame':>9} {'p99 frame':>9} {'<= 5 ms/face':>12}")  # fmt: skip
    for row in rows:
        s = row["stages"]
        per_face = s["total"]["per_face"]["p50"] * 1e3
        cells = [s[stage]["per_face"]["p50"] * 1e3 for stage in STAGES]
        print(f"{row['composite']:>9} {row['width']}x{row['height']:<5} {row['faces']:>5} "
              + " ".join(f"{v:9.2f}" for v in cells)
              + f" {per_face:8.2f} {s['total']['per_frame']['p50'] * 1e3:9.2f} "
              f"{s['total']['per_frame']['p99'] * 1e3:9.2f} {'meets' if per_face <= TARGET_MS_PER_FACE else 'misses':>12}")
    print("(per-stage columns: p50 ms per face; medians of repeats)")


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:  # no CUDA, no weights, bad sizes: one line, not a traceback
        sys.exit(f"error: {exc}")
