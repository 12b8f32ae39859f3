"""The benchmark's printed tables and its JSON file."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path

from .measure import STAGES

#: The seed paper's Table II (Celona, Bianco, Schettini): inference time per face in seconds,
#: measured by its authors on a GPU. Printed beside our numbers for orientation only: other
#: hardware, and our rows include detection and tracking.
PAPER_TABLE_II: tuple[tuple[str, float], ...] = (
    ("AIDPro", 0.02),
    ("G2Face", 0.03),
    ("RiDDLE", 0.03),
    ("FALCO", 0.09),
    ("DeepPrivacy", 0.12),
    ("Celona et al. (seed method)", 0.12),
    ("DeepPrivacy2", 0.28),
)
PAPER_SOURCE = "seed paper (Celona, Bianco, Schettini), Table II: inference time per face, GPU, as published"


def paper_table() -> dict:
    return {"source": PAPER_SOURCE, "unit": "seconds per face", "device": "GPU (the paper's; not measured here)",
            "rows": [{"method": m, "seconds_per_face": s} for m, s in PAPER_TABLE_II]}


def default_output(results_dir: Path, device_slug: str, when: datetime) -> Path:
    """``<results_dir>/stages-<device>-<date>-<time>.json`` (the time keeps same-day runs apart)."""
    return results_dir / f"stages-{device_slug}-{when:%Y-%m-%d-%H%M%S}.json"


def portable_paths(value, base: Path | None = None):
    """``value`` with every absolute path string made relative to ``base`` (the current folder):
    results are committed and shared, and must not carry one machine's folder layout."""
    base = Path.cwd() if base is None else base
    if isinstance(value, dict):
        return {k: portable_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v, base) for v in value]
    if isinstance(value, str) and value.startswith("/") and "\n" not in value:
        return os.path.relpath(value, base)
    return value


def write_json(report: dict, path: Path) -> Path:
    """Write ``report`` as JSON (strict: no NaN, portable paths) to ``path`` via a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(portable_paths(report), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def _ms(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 1000:.2f}"


def _triple(p: dict | None) -> str:
    if p is None:
        return f"{'-':>8} {'-':>8} {'-':>8}"
    return " ".join(f"{_ms(p[k]):>8}" for k in ("p50", "p95", "p99"))


def _faces_text(scenario: dict) -> str:
    faces = scenario["faces"]
    detected = faces["detected"]
    if faces["planted"] is None:
        return f"faces per frame {detected['min']}-{detected['max']} (median {detected['median']:g})"
    found = faces["found"]
    verdict = "OK" if faces["ok"] else "MISMATCH"
    return (f"planted {faces['planted']}, detected {detected['min']}-{detected['max']}, "
            f"found {found['min']}-{found['max']} {verdict}")


def scenario_block(scenario: dict) -> list[str]:
    """The stage table of one scenario (one line when it could not run)."""
    head = f"{scenario['name']} | {scenario['mode']}"
    if scenario["status"] != "ok":
        return [f"{head} | {scenario['label']}"]
    median = scenario["median"]
    runs = len(scenario["repeats"])
    frames = scenario["repeats"][0]["summary"]["frames"]
    label = f" [{scenario['label']}]" if scenario["label"] else ""
    lines = [
        f"{head}{label} | {_faces_text(scenario)} | {median['fps']:.1f} fps (median of {runs} x {frames} frames)",
        f"  {'stage':<24} {'per frame ms: p50':>17} {'p95':>8} {'p99':>8}   "
        f"{'per face ms: p50':>16} {'p95':>8} {'p99':>8}",
    ]
    tag = " *" if scenario["label"] else ""
    for name in STAGES:
        if name in median["stages"]:
            s = median["stages"][name]
            mark = tag if name == "generate" else ""
            lines.append(f"  {name + mark:<24} {_triple(s['per_frame']):>35}   {_triple(s['per_face']):>34}")
    for name, title in (("process", "process (no decode/encode)"), ("total", "total (decode..encode)")):
        s = median[name]
        lines.append(f"  {title:<24} {_triple(s['per_frame']):>35}   {_triple(s['per_face']):>34}")
    lines.append(f"  encoder flush at end of run: {_ms(median['encode_flush_s'])} ms (in fps, not in the rows)")
    if scenario["label"]:
        lines.append(f"  * {scenario['label']}")
    if scenario.get("note"):
        lines.append(f"  note: {scenario['note']}")
    return lines


def paper_rows(report: dict) -> list[str]:
    """Our per-face times (p50 of process per face) beside the paper's Table II."""
    lines = [
        "Per-face time beside the seed paper's Table II",
        f"  paper: {PAPER_SOURCE}",
        f"  ours: p50 per face of the whole anonymization (detect..hide/composite, no decode/encode), "
        f"{report['device']['benchmarked'].upper()}, this run",
        f"  {'method / scenario':<62} {'s per face':>10}  device",
    ]
    for method, seconds in PAPER_TABLE_II:
        lines.append(f"  {method:<62} {seconds:>10.2f}  GPU (paper)")
    for s in report["scenarios"]:
        name = f"streamanon {s['mode']}, {s['name']}"
        if s["status"] != "ok":
            lines.append(f"  {name:<62} {'-':>10}  {s['label']}")
            continue
        per_face = s["median"]["process"]["per_face"]
        value = f"{per_face['p50']:.4f}" if per_face else "-"
        label = f" [{s['label']}]" if s["label"] else ""
        gen = ""
        if "generate" in s["median"]["stages"] and s["median"]["stages"]["generate"]["per_face"]:
            gen = f", generate alone {s['median']['stages']['generate']['per_face']['p50']:.4f}"
        lines.append(f"  {name:<62} {value:>10}  {report['device']['benchmarked']} (this run{gen}){label}")
    return lines


def comparison_rows(comparison: dict | None) -> list[str]:
    if comparison is None:
        return ["End-to-end comparison with deface: not run"]
    if "status" in comparison:
        return [f"End-to-end comparison with deface: {comparison['status']}"]
    frames = comparison["frames"]
    what = f"the first {frames} frames of" if comparison["trimmed"] else f"all {frames} frames of"
    lines = [
        f"End to end on {what} {Path(comparison['clip']).name} (blur; wall clock of the whole command incl. "
        f"start-up and model loading; median of {comparison['repeats']}, runs alternated)",
    ]
    for key, title in (("streamanon", "streamanon file"), ("deface", "deface")):
        r = comparison[key]
        if key == "deface" and r.get("version"):
            title = f"deface {r['version']}"
        if r["status"] != "ok":
            lines.append(f"  {title:<18} {r['status']}")
            continue
        runs = " ".join(f"{v:.2f}" for v in r["runs_s"])
        lines.append(f"  {title:<18} {r['median_s']:8.2f} s  {r['fps']:6.2f} fps   runs: {runs}")
    ratio = comparison["deface_over_streamanon"]
    if ratio is not None:
        lines.append(f"  deface time / streamanon time: {ratio:.2f}x")
    if comparison["deface"].get("args"):
        lines.append("  deface args: " + " ".join(comparison["deface"]["args"]))
    return lines


def render(report: dict) -> str:
    """The whole printed report."""
    device = report["device"]
    load = report["load_average"]
    lines = [f"device: {device['description']} (benchmarked: {device['benchmarked']}; detector on "
             f"{', '.join(device.get('detector_providers') or ['-'])})"]
    start = load.get("start")
    if start is not None:
        busy = start[0] >= 0.5 * device["usable_cores"]
        warn = "  <- BUSY MACHINE: numbers are pessimistic" if busy else ""
        lines.append(f"load average (1/5/15 min): start {start}, end {load.get('end')}{warn}")
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    lines.append(f"versions: {versions}")
    gen = report["generator"]
    if gen is not None and gen["status"] == "trained":
        lines.append(f"generator: trained weights {gen['weights']}, backend {gen['backend']}")
    elif gen is not None and gen["status"] == "untrained":
        lines.append(f"generator: {gen['label']} (freshly initialised, backend {gen['backend']})")
    elif gen is not None:
        lines.append(f"generator: {gen['label']}")
    s = report["settings"]
    lines.append(f"settings: {s['frames']} frames after {s['warmup']} warm-up, {s['repeats']} repeats; "
                 f"percentiles per repeat, then the median over repeats")
    lines.append("")
    for scenario in report["scenarios"]:
        lines.extend(scenario_block(scenario))
        lines.append("")
    lines.extend(paper_rows(report))
    lines.append("")
    lines.extend(comparison_rows(report["comparison"]))
    return "\n".join(lines)
