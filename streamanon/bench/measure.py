"""Time one scenario: decode -> the pipeline's own stages -> encode, frame by frame, repeated.

The loop mirrors :func:`streamanon.io.video.transcode` (same reader, writer, rotation handling
and packet passthrough) but holds a :class:`~streamanon.timing.StageTimer` around each step;
the stages in between are timed inside :meth:`Anonymizer.process_frame` itself.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from ..config import EncodeConfig
from ..errors import UserError
from ..pipeline import Anonymizer
from ..timing import StageTimer
from ..types import Frame
from .scenes import count_found
from .stats import median_of_summaries, summarize_stage

#: Every stage in pipeline order; a scenario reports the ones that ran.
STAGES: tuple[str, ...] = (
    "decode", "upload", "detect", "track", "landmarks", "align", "guard", "generate", "photometric", "composite",
    "copy", "hide", "encode",
)  # fmt: skip
#: Stages outside the anonymization itself (file I/O); "process" is the sum of all the others.
IO_STAGES: tuple[str, ...] = ("decode", "encode")


def _next_frame(items, writer) -> Frame | None:
    """The next video frame of ``reader.demux()``; other streams' packets go straight to the writer."""
    for item in items:
        if isinstance(item, Frame):
            return item
        writer.mux_passthrough(item)
    return None


def run_repeat(
    anonymizer: Anonymizer,
    clip: Path,
    out_path: Path,
    frames: int,
    warmup: int,
    encode: EncodeConfig,
    timer: StageTimer,
    planted: np.ndarray | None = None,
) -> dict:
    """Decode, anonymize and encode the first ``warmup + frames`` frames of ``clip`` once.

    Returns the measured (post warm-up) frames' stage times, face counts and wall times.
    ``planted`` (frames, faces, 4): boxes of synthetic faces, to count how many were found.
    """
    from ..io.video import VideoReader, VideoWriter, from_display, to_display

    anonymizer.reset()
    timer.take()  # drop anything left from an earlier run (e.g. the last, empty read)
    record: dict = {"index": [], "faces": [], "detected": [], "found": [], "fallback": [], "total_s": [],
                    "stages_s": {name: [] for name in STAGES}}
    with VideoReader(clip) as reader:
        rotation = reader.rotation
        writer = VideoWriter(out_path, reader, encode, drop_unsupported=True)
        try:
            items = reader.demux()
            for step in range(warmup + frames):
                started = time.perf_counter()
                with timer.stage("decode"):
                    frame = _next_frame(items, writer)
                    if frame is not None and rotation:
                        frame = dataclasses.replace(frame, image=to_display(frame.image, rotation))
                if frame is None:
                    break
                image, stats = anonymizer.process_frame(frame, timer)
                with timer.stage("encode"):
                    writer.write(frame, from_display(image, rotation) if rotation else image)
                total = time.perf_counter() - started
                stages = timer.take()
                if step < warmup:
                    continue
                record["index"].append(frame.index)
                record["faces"].append(stats.faces)
                record["detected"].append(stats.detected)
                record["fallback"].append(stats.fallback)
                record["total_s"].append(total)
                if planted is not None:
                    boxes = [tr.raw_box for tr in anonymizer.tracker.tracks if tr.detected and tr.raw_box is not None]
                    record["found"].append(count_found(planted[frame.index], boxes))
                unknown = set(stages) - set(STAGES)
                if unknown:
                    raise AssertionError(f"pipeline timed unknown stage(s) {sorted(unknown)}")
                # None where a stage did not run in a frame keeps the lists aligned with "faces".
                for name in STAGES:
                    record["stages_s"][name].append(stages.get(name))
            flush_started = time.perf_counter()
            writer.close()  # the encoder's buffered frames are encoded here
            record["encode_flush_s"] = time.perf_counter() - flush_started
        except BaseException:
            writer.abort()
            raise
    out_path.unlink(missing_ok=True)
    if not record["total_s"]:
        raise UserError(f"{clip} has no frames left after {warmup} warm-up frames; lower --warmup")
    record["stages_s"] = {k: v for k, v in record["stages_s"].items() if any(x is not None for x in v)}
    if planted is None:
        record["found"] = None
    return record


def summarize_repeat(record: dict) -> dict:
    """Percentiles per stage (and for "process" and "total") of one repeat, plus throughput."""
    faces = record["faces"]
    stages = {}
    for name, column in record["stages_s"].items():
        ran = [(t, n) for t, n in zip(column, faces) if t is not None]
        stages[name] = summarize_stage([t for t, _ in ran], [n for _, n in ran])
    process = [
        sum(record["stages_s"][name][i] or 0.0 for name in record["stages_s"] if name not in IO_STAGES)
        for i in range(len(faces))
    ]
    wall = sum(record["total_s"])
    return {
        "frames": len(faces),
        "wall_s": wall,
        "encode_flush_s": record["encode_flush_s"],
        # Frames per second of the whole loop, the encoder's final flush included.
        "fps": len(faces) / (wall + record["encode_flush_s"]),
        "stages": stages,
        "process": summarize_stage(process, faces),
        "total": summarize_stage(record["total_s"], faces),
    }


def median_over_repeats(summaries: list[dict]) -> dict:
    """Median of every number of :func:`summarize_repeat` over the repeats."""
    names = [name for name in STAGES if all(name in s["stages"] for s in summaries)]
    return {
        "fps": statistics.median(s["fps"] for s in summaries),
        "encode_flush_s": statistics.median(s["encode_flush_s"] for s in summaries),
        "stages": {name: median_of_summaries([s["stages"][name] for s in summaries]) for name in names},
        "process": median_of_summaries([s["process"] for s in summaries]),
        "total": median_of_summaries([s["total"] for s in summaries]),
    }


def faces_check(records: list[dict], planted: int | None) -> dict:
    """Detected (and, for synthetic scenes, found) faces per frame over every repeat."""
    detected = [n for r in records for n in r["detected"]]
    out: dict = {
        "planted": planted,
        "detected": {"min": min(detected), "median": statistics.median(detected), "max": max(detected)},
        "fallback_faces": sum(sum(r["fallback"]) for r in records),
    }
    if planted is not None:
        found = [n for r in records for n in r["found"]]
        out["found"] = {"min": min(found), "max": max(found)}
        out["ok"] = min(detected) == max(detected) == planted and min(found) == planted
    return out
