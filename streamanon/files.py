"""File jobs: a video, an image or a folder of them through an :class:`~streamanon.pipeline.Anonymizer`.

What ``streamanon file`` runs: path checks, one tracker run per video, photo or frame sequence,
atomic outputs, progress bars and the run's summary. The stages themselves live in
:mod:`streamanon.pipeline`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

from .config import AnonymizerConfig
from .errors import UserError
from .facelog import FacesLog
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
    videos: int = 0  # videos of a folder anonymized
    skipped: int = 0  # outputs that existed and were left alone (``skip_existing``)

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

    def absorb(self, part: RunSummary, segment: int) -> None:
        """Count the frames of ``part`` (one tracker run, e.g. one video of a folder) as ``segment``."""
        self.frames += part.frames
        self.faces += part.faces
        self.fallback += part.fallback
        self.track_ids.update((segment, track_id) for _, track_id in part.track_ids)

    def line(self) -> str:
        if self.skipped and not self.frames:
            exist = "output exists" if self.skipped == 1 else f"all {self.skipped} outputs exist"
            return f"nothing to do, {exist} -> {self.output}"
        fallback = f", {self.fallback} fell back to blur" if self.fallback else ""
        videos = f", {self.videos} videos" if self.videos else ""
        skipped = f", {self.skipped} skipped (output exists)" if self.skipped else ""
        return (
            f"{self.frames} frames{videos}, {self.faces} faces{fallback}, {self.tracks} tracks, "
            f"{self.seconds:.1f} s, {self.fps:.1f} fps [{self.backend}]{skipped} -> {self.output}"
        )


def anonymize_file(
    src: str | Path,
    dst: str | Path,
    config: AnonymizerConfig | None = None,
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    progress: bool = False,
    drop_unsupported: bool = False,
    sequence_fps: float | None = None,
    report: Callable[[str], None] | None = None,
    faces_log: str | Path | None = None,
) -> RunSummary:
    """Anonymize a video file, an image file, or a folder of images and videos into ``dst``.

    The output is written to a temporary file and renamed on success; the input is never modified.
    A folder's outputs mirror its tree (same relative paths and names); each of its videos is
    tracked on its own, and a file that fails is named in one line on stderr while the rest go on
    (:class:`UserError` at the end). ``skip_existing`` leaves outputs that exist alone (an
    interrupted folder resumes where it stopped; a half-written output never exists, see
    :func:`~streamanon.io.paths.atomic_output`); ``overwrite`` replaces them instead.
    ``drop_unsupported`` leaves out non-video streams the output container cannot hold instead of
    failing. ``sequence_fps`` (folders only): the images of each folder are consecutive frames of
    one camera at this rate, in natural name order, tracked across (see :func:`image_sequences`);
    None: unrelated photos, each on its own. ``report``: called with one line per finished video of
    a folder. ``faces_log``: write what was hidden where, frame by frame, to this JSON Lines file
    (:mod:`streamanon.facelog`).
    """
    from .io.images import is_image_path
    from .io.paths import check_paths

    src, dst = Path(src), Path(dst)
    if overwrite and skip_existing:
        raise UserError("--overwrite replaces existing outputs and --skip-existing leaves them: choose one")
    if sequence_fps is not None:
        if not src.is_dir():
            raise UserError(f"--sequence reads a folder of frames, and {src} is not a folder")
        if not (math.isfinite(sequence_fps) and sequence_fps > 0):
            raise UserError(f"the frame rate of a sequence must be a positive number, got {sequence_fps}")
    if skip_existing and not src.is_dir() and (dst.exists() or dst.is_symlink()):
        check_paths(src, dst, overwrite=True)  # every other check still applies
        return RunSummary(output=dst, skipped=1)
    check_paths(src, dst, overwrite, skip_existing)
    if faces_log is not None:
        _check_faces_log(Path(faces_log), src, dst, overwrite)
    anonymizer = Anonymizer(config)
    summary = RunSummary(output=dst, backend=anonymizer.backend_name)
    started = time.perf_counter()
    failure: UserError | None = None
    with FacesLog(faces_log) if faces_log is not None else contextlib.nullcontext() as faces:
        if src.is_dir():
            job = _FolderJob(anonymizer, dst, summary, progress, overwrite, skip_existing, drop_unsupported, report,
                             faces)  # fmt: skip
            failure = job.run(src, sequence_fps)  # the log keeps the files done when others failed
        elif is_image_path(src):
            from .io.images import read_image, write_image

            image, stats = anonymizer.process_frame(Frame(read_image(src), 0))
            write_image(dst, image)
            summary.add(stats)
            if faces is not None:
                faces.write(src.name, 0, None, stats)
        else:
            _anonymize_video(anonymizer, src, dst, summary, progress, overwrite, drop_unsupported, faces=faces)
    if failure is not None:
        raise failure
    summary.seconds = time.perf_counter() - started
    return summary


def _check_faces_log(path: Path, src: Path, dst: Path, overwrite: bool) -> None:
    """One line before any work if the faces log cannot be written where asked."""
    from .io.paths import check_parent_writable, same_file

    if same_file(path, src) or same_file(path, dst) or (src.is_dir() and src.resolve() in path.resolve().parents):
        raise UserError(f"the faces log must be a file of its own, outside the input: {path}")
    if path.is_dir():
        raise UserError(f"the faces log is a file, not a folder: {path}")
    if path.exists() and not overwrite:
        raise UserError(f"faces log exists: {path} (use --overwrite, or another name for a resumed run's log)")
    check_parent_writable(path)


@dataclass
class _FolderJob:
    """A folder's photos (or frame sequences) and videos into the mirror folder ``dst``."""

    anonymizer: Anonymizer
    dst: Path
    summary: RunSummary
    progress: bool
    overwrite: bool
    skip_existing: bool
    drop_unsupported: bool
    report: Callable[[str], None] | None
    faces: FacesLog | None = None
    failed: list[Path] = field(default_factory=list)
    segment: int = -1  # counts tracker runs: track ids start at 1 again in each

    def run(self, src: Path, sequence_fps: float | None) -> UserError | None:
        """Do the folder; returns the error that names the files that failed, if any did."""
        from .io.images import image_sequences, iter_image_folder
        from .io.paths import iter_video_folder

        if sequence_fps is None:  # photos of a folder are unrelated: each one on its own
            runs = [[item] for item in iter_image_folder(src)]
        else:
            runs = image_sequences(src)
        videos = list(iter_video_folder(src))
        files = sum(len(run) for run in runs) + len(videos)
        if not files:
            raise UserError(f"no images or videos found in folder {src}")
        if runs:
            time_base = None if sequence_fps is None else 1 / Fraction(sequence_fps).limit_denominator(1001)
            self._images(runs, time_base)
        for relative, path in videos:
            self._video(relative, path)
        self._note_left_out(src)
        if self.failed:
            kind = "files" if runs and videos else "videos" if videos else "images"
            done = files - len(self.failed) - self.summary.skipped
            kept = f", {self.summary.skipped} there before left as they were" if self.summary.skipped else ""
            return UserError(
                f"{len(self.failed)} of {files} {kind} failed (each named above), {done} anonymized into "
                f"{self.dst}{kept}"
            )
        return None

    def _note_left_out(self, src: Path) -> None:
        """Say which files were not taken (an animated GIF, say, is not done here: only alone, into a video)."""
        from .io.paths import other_files

        left = other_files(src)
        if left and self.report is not None:
            names = ", ".join(str(name) for name in left[:3]) + (", ..." if len(left) > 3 else "")
            self.report(f"left out {len(left)} file(s) that are neither images nor videos by extension: {names}")

    def _target(self, relative: Path) -> Path | None:
        """Where ``relative`` goes; None when it exists and is to be left alone (the caller counts it
        as skipped once it is: a frame of a sequence is still read, and may fail)."""
        target = self.dst / relative
        if target.exists() or target.is_symlink():
            if self.skip_existing:
                return None
            if not self.overwrite:
                raise UserError(f"output exists: {target} (use --overwrite to replace it)")
        return target

    @staticmethod
    def _make_folder(target: Path) -> list[Path]:
        """Create ``target``'s folder; returns the folders that had to be made, deepest first."""
        made = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create folder {target.parent}: {exc.strerror or exc}") from None
        return made

    @staticmethod
    def _remove_if_empty(folders: list[Path]) -> None:
        """Take back folders made for an output that never came (failed or interrupted)."""
        for folder in folders:
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (another output is in it) or gone: leave the rest too

    def _fail(self, path: Path, exc: UserError, bar) -> None:
        # One broken or unreadable file must not cost the rest of the folder: say so, go on.
        self.failed.append(path)
        what = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        _report_skipped(bar, f"streamanon: skipped: {what}")

    def _images(self, runs: list[list[tuple[Path, Path]]], time_base: Fraction | None) -> None:
        from .io.images import read_image, write_image

        bar = _progress_bar(sum(len(run) for run in runs), "images", self.progress)
        try:
            for run in runs:
                self.anonymizer.reset()  # no tracking from one sequence (or photo) into the next
                self.segment += 1
                size = None
                for index, (relative, path) in enumerate(run):
                    try:
                        target = self._target(relative)
                        if target is None and time_base is None:
                            self.summary.skipped += 1
                            continue  # a photo done before: nothing depends on it
                        frame = Frame(read_image(path), index, index, time_base)
                        if size is not None and frame.image.shape != size:
                            # Another camera or a crop: the tracks' boxes would mean nothing in it.
                            log.warning("%s: %s differs in size from the frames before it; tracking starts anew",
                                        path, "x".join(map(str, frame.image.shape[1::-1])))  # fmt: skip
                            self.anonymizer.reset()
                            self.segment += 1
                        size = frame.image.shape
                        # A frame whose output exists is still seen, so the tracks of a sequence
                        # go on through it (and hide the next frames' faces as they would have).
                        image, stats = self.anonymizer.process_frame(frame)
                        if target is not None:
                            made = self._make_folder(target)
                            try:
                                write_image(target, image)  # atomic: a failure leaves nothing at target
                            except BaseException:
                                self._remove_if_empty(made)
                                raise
                    except UserError as exc:
                        # (In a sequence its time still passes: the faces known of coast over the gap.)
                        self._fail(path, exc, bar)
                    else:
                        if target is None:
                            self.summary.skipped += 1
                        else:
                            self.summary.add(stats, self.segment)
                            if self.faces is not None:
                                self.faces.write(relative.as_posix(), index, frame.time, stats)
                    finally:
                        _advance(bar, self.summary)
        finally:
            _close(bar)

    def _video(self, relative: Path, path: Path) -> None:
        from .io.paths import check_paths

        made: list[Path] = []
        mark = self.faces.mark() if self.faces is not None else None
        try:
            target = self._target(relative)
            if target is None:
                self.summary.skipped += 1
                return
            made = self._make_folder(target)
            check_paths(path, target, overwrite=True)  # _target dealt with an existing output
            self.anonymizer.reset()  # each video is its own clip: tracks and identities start anew
            self.segment += 1
            part = RunSummary(output=target, backend=self.summary.backend)
            started = time.perf_counter()
            _anonymize_video(self.anonymizer, path, target, part, self.progress, True, self.drop_unsupported,
                             label=str(relative), faces=self.faces, source=relative.as_posix())  # fmt: skip
            part.seconds = time.perf_counter() - started
        except UserError as exc:
            self._remove_if_empty(made)
            if mark is not None:
                self.faces.rewind(mark)  # no output, so no record of it
            self._fail(path, exc, None)
            return
        except BaseException:  # Ctrl-C, SIGTERM: the output was removed, and so is its new folder
            self._remove_if_empty(made)
            raise
        self.summary.absorb(part, self.segment)
        self.summary.videos += 1
        if self.report is not None:
            self.report(f"{relative}: {part.line()}")


def _report_skipped(bar, line: str) -> None:
    """One line on stderr, above the progress bar when there is one."""
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def _anonymize_video(
    anonymizer: Anonymizer, src: Path, dst: Path, summary: RunSummary, progress: bool, overwrite: bool,
    drop_unsupported: bool, label: str = "anonymizing", faces: FacesLog | None = None, source: str | None = None,
) -> None:
    from .io.video import ProcessedFrame, VideoReader, from_display, to_display, transcode

    with VideoReader(src) as reader:
        total, rotation = reader.estimated_frame_count, reader.rotation
        others = ", ".join(f"{s.type} ({s.codec_context.name if s.codec_context else 'no codec'})"
                           for s in reader.container.streams if s.index != reader.stream.index)  # fmt: skip
        log.info("%s: %dx%d %s video, %s fps, %s frames, rotation %d; other streams: %s", src, reader.width,
                 reader.height, reader.stream.codec_context.name, reader.fps and f"{float(reader.fps):.3g}",
                 total or "unknown", rotation, others or "none")  # fmt: skip
    bar = _progress_bar(total, "frames", progress, label)

    def process(frame: Frame) -> ProcessedFrame:
        # Detectors and landmarks expect upright faces: work on the frame as a player shows it.
        if rotation:
            frame = dataclasses.replace(frame, image=to_display(frame.image, rotation))
        image, stats = anonymizer.process_frame(frame)
        if faces is not None:  # in the upright frame's pixels, as a player shows it
            faces.write(source or src.name, frame.index, frame.time, stats)
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


def _progress_bar(total: int | None, unit: str, enabled: bool, label: str = "anonymizing"):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit[:-1], desc=label, dynamic_ncols=True, leave=False)


def _advance(bar, summary: RunSummary) -> None:
    if bar is None:
        return
    bar.update(1)
    if summary.frames % 10 == 0 or summary.frames == 1:
        bar.set_postfix(faces_per_frame=f"{summary.faces / max(1, summary.frames):.2f}", tracks=summary.tracks)


def _close(bar) -> None:
    if bar is not None:
        bar.close()
