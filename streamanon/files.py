"""File jobs: a video, an image or a folder of them through an :class:`~streamanon.pipeline.Anonymizer`.

What ``streamanon file`` runs: path checks, one tracker run per video, photo or frame sequence,
atomic outputs, progress bars and the run's summary. The stages themselves live in
:mod:`streamanon.pipeline`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .config import AnonymizerConfig
from .errors import UserError
from .pipeline import Anonymizer
from .types import Frame, FrameStats

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What one run did, for the final summary line."""

    frames: int = 0
    faces: int = 0
    fallback: int = 0
    track_ids: set[tuple[int, int]] = field(default_factory=set)  # (segment, track id): ids restart per segment
    seconds: float = 0.0
    output: Path | None = None
    backend: str = ""

    @property
    def tracks(self) -> int:
        return len(self.track_ids)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, stats: FrameStats, segment: int = 0) -> None:
        """Count one frame's ``stats``; ``segment`` tells apart tracker runs (ids restart in each)."""
        self.frames += 1
        self.faces += stats.faces
        self.fallback += stats.fallback
        self.track_ids.update((segment, track_id) for track_id in stats.track_ids)

    def line(self) -> str:
        fallback = f", {self.fallback} fell back to blur" if self.fallback else ""
        return (
            f"{self.frames} frames, {self.faces} faces{fallback}, {self.tracks} tracks, "
            f"{self.seconds:.1f} s, {self.fps:.1f} fps [{self.backend}] -> {self.output}"
        )


def anonymize_file(
    src: str | Path,
    dst: str | Path,
    config: AnonymizerConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
    drop_unsupported: bool = False,
    sequence_fps: float | None = None,
) -> RunSummary:
    """Anonymize a video file, an image file, or a folder of images into ``dst``.

    The output is written to a temporary file and renamed on success; the input is never modified.
    ``drop_unsupported`` leaves out non-video streams the output container cannot hold instead of
    failing. ``sequence_fps`` (folders only): the images of each folder are consecutive frames of
    one camera at this rate, in natural name order, tracked across (see :func:`image_sequences`);
    None: unrelated photos, each on its own.
    """
    from .io.images import is_image_path
    from .io.paths import check_paths

    src, dst = Path(src), Path(dst)
    if sequence_fps is not None:
        if not src.is_dir():
            raise UserError(f"--sequence reads a folder of frames, and {src} is not a folder")
        if not (math.isfinite(sequence_fps) and sequence_fps > 0):
            raise UserError(f"the frame rate of a sequence must be a positive number, got {sequence_fps}")
    check_paths(src, dst, overwrite)
    anonymizer = Anonymizer(config)
    summary = RunSummary(output=dst, backend=anonymizer.backend_name)
    started = time.perf_counter()
    if src.is_dir():
        _anonymize_folder(anonymizer, src, dst, summary, progress, overwrite, sequence_fps)
    elif is_image_path(src):
        from .io.images import read_image, write_image

        image, stats = anonymizer.process_frame(Frame(read_image(src), 0))
        write_image(dst, image)
        summary.add(stats)
    else:
        _anonymize_video(anonymizer, src, dst, summary, progress, overwrite, drop_unsupported)
    summary.seconds = time.perf_counter() - started
    return summary


def _anonymize_folder(
    anonymizer: Anonymizer, src: Path, dst: Path, summary: RunSummary, progress: bool, overwrite: bool,
    sequence_fps: float | None = None,
) -> None:
    from .io.images import image_sequences, iter_image_folder, read_image, write_image

    if sequence_fps is None:  # photos of a folder are unrelated: each one on its own
        runs = [[item] for item in iter_image_folder(src)]
    else:
        runs = image_sequences(src)
    items = [item for run in runs for item in run]
    if not items:
        raise UserError(f"no images found in folder {src}")
    time_base = None if sequence_fps is None else 1 / Fraction(sequence_fps).limit_denominator(1001)
    bar = _progress_bar(len(items), "images", progress)
    failed: list[Path] = []
    segment = -1  # counts tracker restarts: track ids start at 1 again after each
    try:
        for run in runs:
            anonymizer.reset()  # no tracking from one sequence (or photo) into the next
            segment += 1
            size = None
            for index, (relative, path) in enumerate(run):
                target = dst / relative
                try:
                    if target.exists() and not overwrite:
                        raise UserError(f"output exists: {target} (use --overwrite to replace it)")
                    frame = Frame(read_image(path), index, index, time_base)
                    if size is not None and frame.image.shape != size:
                        # Another camera or a crop: the tracks' boxes would mean nothing in it.
                        log.warning("%s: %s differs in size from the frames before it; tracking starts anew",
                                    path, "x".join(map(str, frame.image.shape[1::-1])))  # fmt: skip
                        anonymizer.reset()
                        segment += 1
                    size = frame.image.shape
                    image, stats = anonymizer.process_frame(frame)
                    try:
                        target.parent.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise UserError(f"cannot create folder {target.parent}: {exc.strerror or exc}") from None
                    write_image(target, image)  # atomic: a failure leaves nothing at target
                except UserError as exc:
                    # One broken or unreadable image must not cost the rest of the folder: say so, go on.
                    # (In a sequence its time still passes: the faces known of coast over the gap.)
                    failed.append(path)
                    what = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                    _report_skipped(bar, f"streamanon: skipped: {what}")
                else:
                    summary.add(stats, segment)
                _advance(bar, summary)
    finally:
        _close(bar)
    if failed:
        done = len(items) - len(failed)
        raise UserError(
            f"{len(failed)} of {len(items)} images failed (each named above), {done} anonymized into {dst}"
        )


def _report_skipped(bar, line: str) -> None:
    """One line on stderr, above the progress bar when there is one."""
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def _anonymize_video(
    anonymizer: Anonymizer, src: Path, dst: Path, summary: RunSummary, progress: bool, overwrite: bool,
    drop_unsupported: bool,
) -> None:
    from .io.video import ProcessedFrame, VideoReader, from_display, to_display, transcode

    with VideoReader(src) as reader:
        total, rotation = reader.estimated_frame_count, reader.rotation
    bar = _progress_bar(total, "frames", progress)

    def process(frame: Frame) -> ProcessedFrame:
        # Detectors and landmarks expect upright faces: work on the frame as a player shows it.
        if rotation:
            frame = dataclasses.replace(frame, image=to_display(frame.image, rotation))
        image, stats = anonymizer.process_frame(frame)
        if rotation:
            image = from_display(image, rotation)
        return ProcessedFrame(image, stats)

    def on_frame(index: int, stats: FrameStats | None) -> None:
        if stats is not None:
            summary.add(stats)
        _advance(bar, summary)

    try:
        transcode(
            src, dst, process, anonymizer.config.encode, overwrite=overwrite, on_frame=on_frame,
            drop_unsupported=drop_unsupported,
        )
    finally:
        _close(bar)


def _progress_bar(total: int | None, unit: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit[:-1], desc="anonymizing", dynamic_ncols=True, leave=False)


def _advance(bar, summary: RunSummary) -> None:
    if bar is None:
        return
    bar.update(1)
    if summary.frames % 10 == 0 or summary.frames == 1:
        bar.set_postfix(faces_per_frame=f"{summary.faces / max(1, summary.frames):.2f}", tracks=summary.tracks)


def _close(bar) -> None:
    if bar is not None:
        bar.close()
