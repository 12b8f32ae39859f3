"""Derive the canonical 68-point template of ``streamanon.faces.align`` from ground truth.

Generalised Procrustes analysis (similarity, no reflection) over every 300-W HELEN test
and AFW ``.pts`` shape plus its mirror image (re-indexed with the 68-point mirror
permutation), so the mean is exactly left-right symmetric. The mean is levelled (eye
centres horizontal), then scaled and centred so that the face region (the landmarks plus
the forehead extension used by ``face_mask``) is ``FACE_FRACTION`` of the crop's side and
centred in it. Prints the array literal to paste into ``align.py``.

    python benchmarks/make_align_template.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamanon.faces.align import MIRROR_68, face_region_points, similarity_transform  # noqa: E402
from streamanon.faces.landmarks import read_pts  # noqa: E402

FACE_FRACTION = 0.6  # face region height (its larger side) / crop side


def normalise(shape: np.ndarray) -> np.ndarray:
    shape = shape - shape.mean(axis=0)
    return shape / np.linalg.norm(shape)


def procrustes_mean(shapes: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Generalised Procrustes mean of (N, 68, 2) shapes (unit size, centred)."""
    mean = normalise(shapes[0])
    for _ in range(iterations):
        aligned = []
        for shape in shapes:
            m = similarity_transform(shape, mean)
            aligned.append(shape @ m[:, :2].T + m[:, 2])
        new = normalise(np.mean(aligned, axis=0))
        if np.abs(new - mean).max() < 1e-7:
            break
        mean = new
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    shapes = [read_pts(p) for sub in ("helen_test", "afw") for p in sorted((args.data / "landmarks68" / sub).glob("*.pts"))]
    shapes = np.asarray(shapes, np.float64)
    mirrored = shapes[:, MIRROR_68] * np.array([-1.0, 1.0])
    mean = procrustes_mean(np.concatenate([shapes, mirrored]))

    # Level the eyes, then force exact symmetry about the vertical axis.
    eyes = mean[42:48].mean(0) - mean[36:42].mean(0)
    angle = -np.arctan2(eyes[1], eyes[0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mean = mean @ rot.T
    mean[:, 0] -= mean[:, 0].mean()
    partner = mean[MIRROR_68]
    mean = np.stack([(mean[:, 0] - partner[:, 0]) / 2, (mean[:, 1] + partner[:, 1]) / 2], axis=1)

    # Scale and centre the face region in the unit square.
    region = face_region_points(mean)
    lo, hi = region.min(0), region.max(0)
    scale = FACE_FRACTION / (hi - lo).max()
    template = (mean - (lo + hi) / 2) * scale + 0.5
    print(f"# {len(shapes)} shapes + mirrors; face region {np.round((hi - lo) * scale, 3)} of the crop")
    print("TEMPLATE_68 = np.array(\n    [")
    for x, y in template:
        print(f"        [{x:.4f}, {y:.4f}],")
    print("    ],\n    np.float32,\n)")


if __name__ == "__main__":
    main()
