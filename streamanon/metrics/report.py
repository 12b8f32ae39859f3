"""Rendering of evaluation results: JSON document, console table, HTML report.

JSON schema (``"schema": "streamanon.eval/1"``)::

    {
      "schema": "streamanon.eval/1",
      "created": ISO-8601 time, "versions": {package: version},
      "rows": [ClipReport, ...]      # the evaluated clip first, then one per baseline
    }

    ClipReport = {
      "label": "anonymized" | "blur" | "pixelate" | ...,
      "original": path, "anonymized": path, "kind": "video" | "images",
      "frames": int, "faces": int (face instances evaluated), "tracks": int,
      "metrics": {name: Summary},      # per clip, over all faces (see METRICS)
      "inter_ocular_px": Summary,      # face scale: outer-eye-corner distance in pixels
      "tracks_detail": [{"track_id", "first_frame", "last_frame", "faces",
                         "inter_ocular_px": Summary, "metrics": {name: Summary}}],
      "temporal": {"pairs": int,                          # consecutive-frame pairs of a track
                   "identity_stability": Summary,         # cosine of consecutive anonymized embeddings
                   "identity_switch_frames": [int],       # frames whose face is another identity than the
                                                          # frame before (cosine < temporal.IDENTITY_SWITCH_COSINE)
                   "jitter_ratio": float|null,            # sum anon landmark motion / sum original motion
                   "jitter_ratio_by_track": {track_id: float|null},
                   "motion_original": Summary, "motion_anonymized": Summary,  # per pair, / IOD
                   "flicker_original": Summary, "flicker_anonymized": Summary, # mean |dI/dt| in the face, 0-255
                   "flicker_ratio": float|null} | null,   # null for images
      "realism": {"fid": {"status": "ok"|"unavailable", "value": float|null,
                          "reason"?: str, "weights"?: path, "faces"?: int},
                  "frechet_embedding": float|null},   # dlib 128-D space, original vs anonymized faces
      "coverage": {"frames_with_faces": int, "leak_frames": [int], "leak_rate": float|null,
                   "leaks": [{"frame", "track_id", "distance"}]},
      "worst": [{"frame", "track_id", "reason": "re-id distance"|"pose NME", "value"}],  # images only in HTML
      "notes": [str]
    }

    Summary = {"mean": float|null, "std": float|null, "n": int}

Metric names (keys of ``metrics``): see :data:`METRICS`. ``detected_hog_original`` is the
HOG rate on the original faces, the reference for ``detected_hog``. Booleans (``detected_*``,
``reid``, ``emotion_agree``) are summarised as 0/1, so their ``mean`` is
the rate. ``frame`` numbers count from 0 in decoding order (for folders: sorted file order).
Values that could not be computed are null, never NaN.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

SCHEMA = "streamanon.eval/1"

# name -> (human label, display format: pct = percentage, fN = N decimals)
METRICS: dict[str, tuple[str, str]] = {
    "detected_ours": ("Detection rate (CenterFace)", "pct"),
    "detected_hog": ("Detection rate (dlib HOG)", "pct"),
    "detected_hog_original": ("  HOG rate on the original", "pct"),
    "cosine": ("Embedding cosine similarity", "f3"),
    "distance": ("Embedding distance", "f3"),
    "reid": ("Re-identification rate (d < 0.6)", "pct"),
    "pose_nme": ("Pose NME (68 pts, L1/IOD)", "f4"),
    "expression_nme": ("Expression NME (51 pts)", "f4"),
    "emotion_agree": ("Emotion agreement", "pct"),
    "si_mse": ("Lighting Si-MSE (face pixels)", "f5"),
    "si_l2_shading": ("Lighting Si-L2 (shading)", "f4"),
    "delta_L": ("Albedo ΔL*", "f2"),
    "delta_C": ("Albedo ΔC*", "f2"),
    "delta_E": ("Albedo ΔE2000", "f2"),
    "detail_ratio": ("Fine-detail ratio (anon / orig)", "f2"),
    "noise_ratio": ("Noise level ratio (anon / orig)", "f2"),
}

# Radar axes (paper Fig. 5 style): each maps a row to a score in [0, 1], 1 = best.
# Privacy axes reward *low* detection/re-id; utility axes reward preserved pose/expression/light.
RADAR_AXES: list[tuple[str, str]] = [
    ("Privacy (1 − re-id)", "privacy"),
    ("Unlinkability (d / 0.9)", "unlinkability"),
    ("Pose (1 − 5·NME)", "pose"),
    ("Expression (1 − 5·NME)", "expression"),
    ("Emotion agreement", "emotion"),
    ("Lighting (1 − 5·Si-L2)", "lighting"),
    ("Colour (1 − ΔE/30)", "colour"),
    ("Temporal (id stability)", "temporal"),
]


def _mean(row: dict, name: str) -> float | None:
    return (row.get("metrics", {}).get(name) or {}).get("mean")


def radar_scores(row: dict) -> dict[str, float | None]:
    """The radar axes of one ClipReport, each clipped to [0, 1] (None when not measured)."""

    def clip(v: float | None) -> float | None:
        return None if v is None else float(min(1.0, max(0.0, v)))

    def inv(name: str, scale: float) -> float | None:
        v = _mean(row, name)
        return None if v is None else clip(1.0 - scale * v)

    stability = (row.get("temporal") or {}).get("identity_stability") or {}
    return {
        "privacy": inv("reid", 1.0),
        # dlib distances: < 0.6 same person, different people typically 0.7-1.0.
        "unlinkability": None if _mean(row, "distance") is None else clip(_mean(row, "distance") / 0.9),
        "pose": inv("pose_nme", 5.0),
        "expression": inv("expression_nme", 5.0),
        "emotion": clip(_mean(row, "emotion_agree")),
        "lighting": inv("si_l2_shading", 5.0),
        "colour": inv("delta_E", 1.0 / 30.0),
        "temporal": clip(stability.get("mean")),
    }


def versions() -> dict[str, str]:
    """Versions of the packages that determine the numbers."""
    out = {}
    for name in ("streamanon", "numpy", "opencv-python-headless", "dlib-bin", "onnxruntime", "torch", "colour-science"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def build_document(rows: list[dict]) -> dict:
    """The top-level JSON document for a list of ClipReports."""
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "rows": rows,
    }


def write_json(document: dict, path: str | Path) -> None:
    """Write the document (NaN is not valid JSON: rows must already hold None instead)."""
    Path(path).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")


# ------------------------------------------------------------------------------------------
# console


def _fmt(value: float | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    return f"{value:.{int(kind[1:])}f}"


def console_table(rows: list[dict]) -> str:
    """A plain-text table: one column per clip row, one line per metric (mean ± std)."""
    labels = [r["label"] for r in rows]
    lines: list[tuple[str, list[str]]] = []
    for name, (title, kind) in METRICS.items():
        cells = []
        for r in rows:
            s = r["metrics"].get(name) or {}
            cell = _fmt(s.get("mean"), kind)
            if s.get("std") is not None and kind != "pct":
                cell += f" ± {_fmt(s.get('std'), kind)}"
            cells.append(cell)
        lines.append((title, cells))
    extra = [
        ("Identity stability (temporal)", [_fmt(((r.get("temporal") or {}).get("identity_stability") or {}).get("mean"), "f3") for r in rows]),
        ("Identity switches", [_switches_cell(r) for r in rows]),
        ("Landmark jitter ratio", [_fmt((r.get("temporal") or {}).get("jitter_ratio"), "f2") for r in rows]),
        ("Flicker ratio", [_fmt((r.get("temporal") or {}).get("flicker_ratio"), "f2") for r in rows]),
        ("FID (Inception)", [_fid_cell(r) for r in rows]),
        ("Fréchet dist. (dlib emb.)", [_fmt(r["realism"].get("frechet_embedding"), "f3") for r in rows]),
        ("Leak frames (d < 0.6)", [_leak_cell(r) for r in rows]),
        ("Faces / frames", [f"{r['faces']} / {r['frames']}" for r in rows]),
    ]
    lines += extra
    width0 = max(len(t) for t, _ in lines)
    widths = [max(len(labels[i]), *(len(c[i]) for _, c in lines)) for i in range(len(rows))]
    out = ["  ".join([" " * width0] + [labels[i].rjust(widths[i]) for i in range(len(rows))])]
    for title, cells in lines:
        out.append("  ".join([title.ljust(width0)] + [cells[i].rjust(widths[i]) for i in range(len(rows))]))
    return "\n".join(out)


def _fid_cell(row: dict) -> str:
    fid = row["realism"].get("fid") or {}
    return _fmt(fid.get("value"), "f2") if fid.get("status") == "ok" else "unavailable"


def _leak_cell(row: dict) -> str:
    return _frames_cell(row["coverage"]["leak_frames"])


def _switches_cell(row: dict) -> str:
    """Identity switches in tracks, with their frames ("–" for images: no temporal pairs)."""
    temporal = row.get("temporal")
    if not temporal:
        return "–"
    return _frames_cell(temporal.get("identity_switch_frames", []))


def _frames_cell(frames: list[int]) -> str:
    if not frames:
        return "none"
    shown = ",".join(str(f) for f in frames[:6])
    return f"{len(frames)}: {shown}{'…' if len(frames) > 6 else ''}"


# ------------------------------------------------------------------------------------------
# HTML

_COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def radar_svg(rows: list[dict], size: int = 420) -> str:
    """An SVG radar chart with one polygon per clip row (axes from :data:`RADAR_AXES`)."""
    cx = cy = size / 2
    radius = size / 2 - 90
    n = len(RADAR_AXES)
    angles = [math.pi / 2 - 2 * math.pi * i / n for i in range(n)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size + 160}" height="{size}" font-family="sans-serif" font-size="11">']
    for level in (0.25, 0.5, 0.75, 1.0):
        pts = " ".join(f"{cx + radius * level * math.cos(a):.1f},{cy - radius * level * math.sin(a):.1f}" for a in angles)
        parts.append(f'<polygon points="{pts}" fill="none" stroke="#ccc"/>')
    for (title, _), a in zip(RADAR_AXES, angles):
        x, y = cx + radius * math.cos(a), cy - radius * math.sin(a)
        parts.append(f'<line x1="{cx}" y1="{cy}" x2="{x:.1f}" y2="{y:.1f}" stroke="#bbb"/>')
        lx, ly = cx + (radius + 14) * math.cos(a), cy - (radius + 14) * math.sin(a)
        anchor = "middle" if abs(math.cos(a)) < 0.2 else ("start" if math.cos(a) > 0 else "end")
        parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" dominant-baseline="middle">{html.escape(title)}</text>')
    for i, row in enumerate(rows):
        scores = radar_scores(row)
        colour = _COLOURS[i % len(_COLOURS)]
        pts = []
        for (_, key), a in zip(RADAR_AXES, angles):
            v = scores[key] or 0.0  # unmeasured axes sit at the centre
            pts.append(f"{cx + radius * v * math.cos(a):.1f},{cy - radius * v * math.sin(a):.1f}")
        parts.append(f'<polygon points="{" ".join(pts)}" fill="{colour}" fill-opacity="0.15" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<rect x="{size + 10}" y="{20 + 18 * i}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{size + 28}" y="{30 + 18 * i}">{html.escape(str(row["label"]))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _jpeg_data_uri(image_rgb: np.ndarray) -> str:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:  # pragma: no cover - encoding a valid uint8 image does not fail
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def render_html(document: dict, thumbnails: Sequence[Sequence[dict]] = ()) -> str:
    """A self-contained HTML report: summary table, radar plot, leaks and worst faces.

    ``thumbnails[i]`` lists the worst faces of row ``i`` as dicts with ``frame``,
    ``track_id``, ``reason``, ``value`` and ``image`` (side-by-side original | anonymized
    RGB uint8).
    """
    rows = document["rows"]
    esc = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>streamanon eval</title>",
        "<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
        "td:first-child,th:first-child{text-align:left}.thumbs{display:flex;flex-wrap:wrap;gap:12px}"
        ".thumbs figure{margin:0}.thumbs figcaption{font-size:12px}.leak{color:#b00}</style></head><body>",
        f"<h1>streamanon evaluation</h1><p>Original: <code>{esc(str(rows[0]['original']))}</code><br>"
        f"Created {esc(document['created'])} · schema {esc(document['schema'])}</p>",
        "<h2>Summary (mean ± std over faces)</h2><table><tr><th>metric</th>",
    ]
    out += [f"<th>{esc(str(r['label']))}</th>" for r in rows]
    out.append("</tr>")
    for name, (title, kind) in METRICS.items():
        out.append(f"<tr><td>{esc(title)}</td>")
        for r in rows:
            s = r["metrics"].get(name) or {}
            cell = _fmt(s.get("mean"), kind)
            if s.get("std") is not None and kind != "pct":
                cell += f" ± {_fmt(s.get('std'), kind)}"
            out.append(f"<td>{esc(cell)}</td>")
        out.append("</tr>")
    for title, fn in (
        ("Identity stability", lambda r: _fmt(((r.get("temporal") or {}).get("identity_stability") or {}).get("mean"), "f3")),
        ("Identity switches", _switches_cell),
        ("Landmark jitter ratio", lambda r: _fmt((r.get("temporal") or {}).get("jitter_ratio"), "f2")),
        ("Flicker ratio", lambda r: _fmt((r.get("temporal") or {}).get("flicker_ratio"), "f2")),
        ("FID (Inception)", _fid_cell),
        ("Fréchet distance (dlib embeddings)", lambda r: _fmt(r["realism"].get("frechet_embedding"), "f3")),
        ("Leak frames", _leak_cell),
        ("Faces / frames", lambda r: f"{r['faces']} / {r['frames']}"),
    ):
        out.append(f"<tr><td>{esc(title)}</td>" + "".join(f"<td>{esc(fn(r))}</td>" for r in rows) + "</tr>")
    out.append("</table>")
    out.append("<h2>Radar</h2>" + radar_svg(rows))
    out.append("<p style='font-size:12px'>Axes are scores in [0, 1], 1 = best: " + esc("; ".join(t for t, _ in RADAR_AXES)) + ".</p>")
    for i, r in enumerate(rows):
        out.append(f"<h2>{esc(str(r['label']))}</h2>")
        leaks = r["coverage"]["leaks"]
        if leaks:
            out.append("<p class='leak'>Privacy leaks (re-identifiable faces): " + esc(
                ", ".join(f"frame {l['frame']} (track {l['track_id']}, d={l['distance']:.3f})" for l in leaks[:50])
            ) + "</p>")
        else:
            out.append("<p>No re-identifiable face found.</p>")
        for note in r.get("notes", []):
            out.append(f"<p style='font-size:12px'>{esc(note)}</p>")
        thumbs = thumbnails[i] if i < len(thumbnails) else []
        if thumbs:
            out.append("<div class='thumbs'>")
            for t in thumbs:
                out.append(
                    f"<figure><img src='{_jpeg_data_uri(t['image'])}' alt='frame {t['frame']}'>"
                    f"<figcaption>frame {t['frame']} · track {t['track_id']} · {esc(t['reason'])} = {t['value']:.3f}"
                    "<br>original | anonymized</figcaption></figure>"
                )
            out.append("</div>")
    out.append("</body></html>")
    return "".join(out)
