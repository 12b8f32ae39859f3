"""Per-stage latency benchmark (``streamanon bench``, ``benchmarks/bench_stages.py``).

Inputs are a real clip (default: the shared ``street_1080p_multi.mp4``) and synthetic scenes
(real face crops pasted on a plain background at 640x360, 1280x720, 1920x1080 with 1, 2, 4, 8
faces; the detector must find exactly the planted faces, and the report says whether it did).
Each mode (blur, pixelate, generate) runs ``warmup + frames`` frames per repeat through the real
reader, :meth:`Anonymizer.process_frame` and writer, with a :class:`~streamanon.timing.StageTimer`
around every stage: decode, upload (the frame to the PyTorch detector's device), detect, track
(incl. box and landmark smoothing), landmarks, align, guard, generate, photometric, composite, copy (the output frame buffer), hide (blur/pixelate/solid, and
generate mode's fail-closed fallback), encode. Warm-up frames are not measured.

Generate mode needs trained weights. Without them it is reported as
``"unavailable: no trained weights"``; with ``untrained_generator=True`` (``--untrained-generator``)
a freshly initialised generator is timed and every such row says
``"UNTRAINED WEIGHTS, TIMING ONLY"``.

JSON report (``schema: "streamanon.bench.stages/1"``); times are seconds::

    schema, when (UTC ISO), versions {package: version|null}
    device {benchmarked, description, cpu, cores, usable_cores, gpu|null, onnxruntime_providers,
            detector_providers, platform}
    load_average {start: [1, 5, 15 min]|null, end: ...}
    settings {BenchSettings fields}, pipeline_config {AnonymizerConfig as a dict}
    generator null | {status: trained|untrained|unavailable, label, weights, backend, detail}
    pipelines? {mode: what replaced the faces (Anonymizer.backend_name)}
    scenarios [{
        name, source: clip|synthetic, mode, width, height, face_size_px?, face_crops?,
        status: ok|unavailable, label ("" or the untrained / unavailable text), note,
        faces {planted|null, detected {min, median, max}, fallback_faces, found? {min, max}, ok?},
        repeats [{summary: REPEAT, per_frame: {index, faces, detected, found|null, fallback,
                  total_s, encode_flush_s, stages_s {stage: [seconds|null per measured frame]}}}],
        median: {fps, encode_flush_s, stages {stage: STAGE}, process: STAGE, total: STAGE} | null}]
    REPEAT = {frames, wall_s, encode_flush_s, fps, stages {stage: STAGE}, process: STAGE, total: STAGE}
    STAGE = {frames (that ran the stage), per_frame {p50, p95, p99}|null, per_face {p50, p95, p99}|null}
    comparison null | {status} | {clip, trimmed, frames, repeats, mode,
        streamanon {command, status, runs_s, median_s, fps},
        deface {version, command, args (paths as INPUT/OUTPUT), status ("ok", "unavailable: ...",
                "failed: ..."), runs_s, median_s, fps},
        deface_over_streamanon}
    paper_table_ii {source, unit, device, rows [{method, seconds_per_face}]}

``process`` is the sum of the stages other than decode and encode; ``total`` the wall time of
the frame from decode to encode; per-face values divide a frame's time by its face count (frames
without faces are left out); ``fps`` counts the encoder's final flush.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Where each public name lives; loaded on first use so that registering the ``bench`` command
# (every ``streamanon`` start) imports nothing heavy.
_EXPORTS = {
    "BenchSettings": "run",
    "SCHEMA": "run",
    "output_path": "run",
    "run_benchmark": "run",
    "STAGES": "measure",
    "PAPER_TABLE_II": "report",
    "render": "report",
    "write_json": "report",
    "UNAVAILABLE_NO_WEIGHTS": "generator",
    "UNTRAINED_LABEL": "generator",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .generator import UNAVAILABLE_NO_WEIGHTS, UNTRAINED_LABEL
    from .measure import STAGES
    from .report import PAPER_TABLE_II, render, write_json
    from .run import SCHEMA, BenchSettings, output_path, run_benchmark


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
