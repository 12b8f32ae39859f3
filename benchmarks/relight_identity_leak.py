"""Does relighting bring back the original's identity? A privacy check of the photometric steps.

    python benchmarks/relight_identity_leak.py [--pairs 40] [--diameter 9 --sigma-color 0.1 --sigma-space 5]

A perfect generator would output some *other* real person. So each original face A (HELEN test
photos with ground-truth landmarks, aligned to 128 px) gets the next photo's face B as its
stand-in, B is post-processed with A's shading, colour and coarse pyramid level, and dlib
embeddings tell how often the result is re-identified as A (distance < 0.6), beside B alone.
Lighting fidelity: correlation of the low-pass luminance (sigma 10 px) of the output and of A
inside the face mask. Prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from streamanon.config import PhotometricConfig
from streamanon.faces.align import align_face
from streamanon.faces.embed import FaceEmbedder
from streamanon.faces.landmarks import read_pts
from streamanon.io.images import read_image
from streamanon.photometric.reference import postprocess

SIZE = 128
SAME_PERSON = 0.6
HELEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "landmarks68" / "helen_test"


def aligned_faces(folder: Path, count: int) -> list:
    """The first ``count`` HELEN test faces aligned with their ground-truth landmarks."""
    paths = sorted(folder.glob("*.jpg"))[:count]
    return [align_face(read_image(p), read_pts(p.with_suffix(".pts")), SIZE) for p in paths]


def crop_embedding(embedder: FaceEmbedder, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    # dlib's embedding chip is 150 px: upscale the 128 px crop 2x so it is not the bottleneck.
    big = cv2.resize(crop, (2 * SIZE, 2 * SIZE), interpolation=cv2.INTER_CUBIC)
    return embedder.embed(big, landmarks * 2 + 0.5)


def lighting_correlation(out: np.ndarray, orig: np.ndarray, mask: np.ndarray) -> float:
    """Correlation of low-pass luminance inside the mask: how much of the lighting is kept."""
    def lowpass(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 10)

    inside = mask > 0.5
    return float(np.corrcoef(lowpass(out)[inside], lowpass(orig)[inside])[0, 1])


def leak_study(faces: list, configs: dict[str, PhotometricConfig]) -> dict[str, dict]:
    """Per setting: re-id rate and mean distance of post-processed stand-ins, and lighting kept."""
    embedder = FaceEmbedder()
    results: dict[str, dict] = {}
    n = len(faces)
    rows: dict[str, dict[str, list[float]]] = {k: {"distance": [], "lighting": []} for k in ["stand-in", *configs]}
    for i in range(n):
        a, b = faces[i], faces[(i + 1) % n]
        ea = crop_embedding(embedder, a.image, a.landmarks)
        rows["stand-in"]["distance"].append(float(np.linalg.norm(ea - crop_embedding(embedder, b.image, a.landmarks))))
        rows["stand-in"]["lighting"].append(lighting_correlation(b.image, a.image, a.mask))
        for name, cfg in configs.items():
            out = postprocess(b.image[None], a.image[None], a.mask[None], cfg)[0]
            rows[name]["distance"].append(float(np.linalg.norm(ea - crop_embedding(embedder, out, a.landmarks))))
            rows[name]["lighting"].append(lighting_correlation(out, a.image, a.mask))
    for name, r in rows.items():
        d = np.array(r["distance"])
        results[name] = {
            "pairs": int(len(d)),
            "reid_rate": float(np.mean(d < SAME_PERSON)),
            "mean_distance": float(d.mean()),
            "lighting_correlation": float(np.mean(r["lighting"])),
            "config": asdict(configs[name]) if name in configs else None,
        }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--diameter", type=int, default=9, help="the sharp setting to compare with the default")
    parser.add_argument("--sigma-color", type=float, default=0.1)
    parser.add_argument("--sigma-space", type=float, default=5.0)
    parser.add_argument("--data", type=Path, default=HELEN)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"error: HELEN test photos not found in {args.data}", file=sys.stderr)
        return 1
    sharp = PhotometricConfig(
        bilateral_diameter=args.diameter, bilateral_sigma_color=args.sigma_color, bilateral_sigma_space=args.sigma_space
    )
    configs = {
        "default": PhotometricConfig(),
        f"sharp d{args.diameter} sc{args.sigma_color} ss{args.sigma_space}": sharp,
        "no relight": PhotometricConfig(relight=False),
    }
    results = leak_study(aligned_faces(args.data, args.pairs), configs)
    print(f"{'setting':34s} {'re-id (d<0.6)':>14s} {'mean d':>8s} {'lighting corr':>14s}")
    for name, r in results.items():
        print(f"{name:34s} {100 * r['reid_rate']:13.1f}% {r['mean_distance']:8.3f} {r['lighting_correlation']:14.3f}")
    out = Path(__file__).resolve().parent / "results" / f"relight-leak-{datetime.now(timezone.utc):%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"pairs": args.pairs, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
