"""What a training run leaves to look at: loss CSV, loss-curve PNG, sample grids."""

from __future__ import annotations

import csv
import math
import os
import types
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..io.images import write_image


class LossLog:
    """Appends one CSV row per logged step; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str], resume_step: int = 0) -> None:
        self.path = Path(path)
        self.columns = ["step", *columns]
        rows = read_losses(self.path) if (resume_step > 0 and self.path.is_file()) else []
        # Steps after the checkpoint were never saved: a resumed run will log them again.
        rows = [r for r in rows if r["step"] <= resume_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.columns)
            for row in rows:
                writer.writerow([_fmt(row.get(c)) for c in self.columns])

    def append(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([step] + [_fmt(values.get(c)) for c in self.columns[1:]])


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_losses(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a loss CSV as dicts (empty cells are absent)."""
    rows = []
    with open(path, newline="") as handle:
        for raw in csv.DictReader(handle):
            row = {k: float(v) for k, v in raw.items() if v not in ("", None)}
            if "step" in row:
                row["step"] = int(row["step"])
                rows.append(row)
    return rows


_COLORS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
]  # fmt: skip


def plot_losses(csv_path: str | os.PathLike, png_path: str | os.PathLike, smooth: int = 20) -> Path:
    """Draw every loss column against the step, one panel each (matplotlib if installed, else OpenCV)."""
    rows = read_losses(csv_path)
    with open(csv_path, newline="") as handle:
        columns = [c for c in next(csv.reader(handle), []) if c != "step"]
    series = {}
    for c in columns:
        pts = [(r["step"], r[c]) for r in rows if c in r and math.isfinite(r[c])]
        if pts:
            series[c] = np.asarray(pts, np.float64)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        # colour-science puts a MagicMock in sys.modules["matplotlib"] when matplotlib is
        # missing; only a real module can draw.
        if not isinstance(matplotlib, types.ModuleType):
            raise ImportError("matplotlib is a stand-in, not the real package")
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        write_image(png_path, _plot_cv2(series, smooth))
        return png_path
    n = max(1, len(series))
    cols = min(3, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4 * cols, 2.6 * ((n + cols - 1) // cols)), squeeze=False)
    for ax, (name, pts) in zip(axes.flat, series.items()):
        ax.plot(pts[:, 0], pts[:, 1], alpha=0.3)
        ax.plot(pts[:, 0], _moving_average(pts[:, 1], smooth))
        ax.set_title(name)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.tight_layout()
    tmp = png_path.with_name(png_path.stem + ".partial.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < 2 or window <= 1:
        return values
    window = min(window, len(values))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _plot_cv2(series: dict[str, np.ndarray], smooth: int) -> np.ndarray:
    """A small grid of line plots drawn with OpenCV (RGB uint8)."""
    pw, ph, cols = 320, 200, 3
    n = max(1, len(series))
    rows = (n + cols - 1) // cols
    canvas = np.full((rows * ph, min(cols, n) * pw, 3), 255, np.uint8)
    for i, (name, pts) in enumerate(series.items()):
        ox, oy = (i % cols) * pw, (i // cols) * ph
        left, right, top, bottom = ox + 48, ox + pw - 28, oy + 22, oy + ph - 20
        cv2.rectangle(canvas, (left, top), (right, bottom), (200, 200, 200), 1)
        x, y = pts[:, 0], pts[:, 1]
        ys = _moving_average(y, smooth)
        lo, hi = float(np.min(y)), float(np.max(y))
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        x0, x1 = float(x.min()), float(max(x.max(), x.min() + 1))

        def to_px(xv, yv):
            px = left + (xv - x0) / (x1 - x0) * (right - left)
            py = bottom - (yv - lo) / (hi - lo) * (bottom - top)
            return np.stack([px, py], axis=1).round().astype(np.int32)

        cv2.polylines(canvas, [to_px(x, y)], False, (170, 200, 230), 1, cv2.LINE_AA)
        cv2.polylines(canvas, [to_px(x, ys)], False, _COLORS[i % len(_COLORS)], 2, cv2.LINE_AA)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(canvas, name, (left, oy + 16), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{hi:.3g}", (ox + 2, top + 8), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{lo:.3g}", (ox + 2, bottom), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{int(x0)}", (left, oy + ph - 6), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"step {int(x.max())}", (right - 60, oy + ph - 6), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
    return canvas


def sample_grid(rows: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tile rows of images (each (N, S, S, 3) uint8) into one RGB image, a row per array."""
    n, size = rows[0].shape[0], rows[0].shape[1]
    grid = np.full((len(rows) * (size + pad) + pad, n * (size + pad) + pad, 3), 255, np.uint8)
    for r, images in enumerate(rows):
        for c in range(n):
            y, x = pad + r * (size + pad), pad + c * (size + pad)
            grid[y : y + size, x : x + size] = images[c]
    return grid
