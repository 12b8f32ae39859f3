"""The live-stream loop: capture, processing and output on their own threads, joined by bounded queues.

::

    capture thread          processing thread               output thread
    source -> timeline ->  [queue] -> anonymize / fail-closed -> [queue] -> sinks -> latency

* **Latency policy.** ``realtime``: a full queue drops its oldest frame (counted), and a
  frame that has already waited longer than ``max_latency`` when processing reaches it,
  while a newer frame waits behind it, skips detection and goes out with every known
  face blurred (counted as late), so the output catches up with the camera.
  ``lossless``: full queues make the stage before wait; every frame is fully processed,
  however late.
* **Fail closed.** A frame whose processing raises goes out through
  :meth:`Anonymizer.hide_known_faces` (every known face blurred); if even that fails, or
  no frame has been processed yet (nothing is known), the frame is dropped, never sent as
  captured. Processing that fails on :data:`MAX_CONSECUTIVE_FAILURES` frames in a row
  stops the stream: new faces would go out unseen.
* **Reconnects.** A live source that stalls, drops or refuses is reopened with
  exponential backoff (0.5 s doubling to 10 s); ``max_retries`` consecutive failures end
  the stream with an error. Network sinks are reopened the same way; frames meanwhile
  are counted as undelivered.
* **Ending.** The end of a file or of stdin, :meth:`StreamRunner.stop` (signals, the
  duration) or an error: capture stops, the queued frames are still processed and sent,
  and every sink is finalised (recordings stay playable).
* **Latency** is measured per frame from the moment the source returned it to the moment
  every sink accepted it, and reported as p50/p99 every ``report_every`` seconds and at
  the end.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import numpy as np

from ..errors import UserError
from ..pipeline import Anonymizer
from ..types import Frame, FrameStats
from .latency import LatencyStats, LatencySummary
from .queues import FrameQueue, LatencyPolicy
from .sinks import Sink, SinkClosed, SinkError
from .sources import Source, SourceError
from .timeline import Timeline

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
MAX_CONSECUTIVE_FAILURES = 25  # about a second of video processed blind before giving up
_POLL = 0.1  # seconds: how often idle threads look at the stop flag


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (1-based): 0.5, 1, 2, 4, 8, 10, 10..."""
    return min(0.5 * 2 ** (attempt - 1), 10.0)


@dataclass(frozen=True)
class StreamOptions:
    """Latency and robustness settings of a live stream."""

    latency: LatencyPolicy = "realtime"
    queue_size: int = 2  # frames waiting between two stages (realtime: the latency bound)
    max_latency: float = 1.0  # realtime: a frame older than this skips detection (known faces blurred)
    max_retries: int = 5  # consecutive failed reconnects of the source (or a network sink) before giving up
    report_every: float = 10.0  # seconds between progress lines; 0: only the final one
    duration: float | None = None  # stop after this many seconds


@dataclass
class _Captured:
    frame: Frame  # pts on the output timeline (TIME_BASE)
    captured_at: float  # time.monotonic() when the source returned it
    t: float  # output seconds


@dataclass
class _Processed:
    image: np.ndarray
    captured_at: float
    t: float
    stats: FrameStats | None  # None: went out through the fail-closed path


@dataclass
class StreamSummary:
    """What a stream run did; ``error`` is set when it ended because something failed."""

    source: str = ""
    frames_in: int = 0  # frames captured
    frames_out: int = 0  # frames accepted by at least one sink
    dropped: int = 0  # realtime: frames evicted from a full queue
    late: int = 0  # realtime: frames that skipped detection because they were too old
    failed: int = 0  # frames whose processing raised (sent with known faces blurred, or withheld)
    withheld: int = 0  # failed frames not sent: nothing known to blur yet, or the blur itself failed
    undelivered: int = 0  # processed frames no sink took (network sink down)
    reconnects: int = 0
    faces: int = 0
    track_ids: set[int] = field(default_factory=set)
    seconds: float = 0.0
    end_reason: str = ""
    error: str | None = None
    latency: LatencySummary = field(default_factory=lambda: LatencySummary(0, None, None, None))
    outputs: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line for stderr."""
        parts = [
            f"{self.frames_in} frames in, {self.frames_out} out",
            f"{self.dropped} dropped",
            f"{self.late} late",
            f"{self.failed} failed",
        ]
        if self.withheld:
            parts.append(f"{self.withheld} withheld")
        if self.undelivered:
            parts.append(f"{self.undelivered} undelivered")
        parts += [
            _plural(self.reconnects, "reconnect"),
            _plural(len(self.track_ids), "track"),
            f"{self.seconds:.1f} s, {self.fps:.1f} fps",
        ]
        outputs = ", ".join(self.outputs) or "nothing"
        return f"stream ended ({self.end_reason}): {', '.join(parts)}; {self.latency.line()} -> {outputs}"


def _quiet_when_broken(report: Callable[[str], None]) -> Callable[[str], None]:
    """``report``, silenced for good once its stream is gone (stderr piped into ``head``, a closed
    terminal): progress lines must never cost the recording."""
    broken = threading.Event()

    def say(line: str) -> None:
        if broken.is_set():
            return
        try:
            report(line)
        except OSError as exc:  # BrokenPipeError, EIO on a hung-up terminal, ...
            broken.set()
            log.debug("progress lines stop: %s", exc)

    return say


class StreamRunner:
    """Runs one live stream from ``source`` through ``anonymizer`` into ``sinks``.

    ``run()`` blocks until the stream ends and returns a :class:`StreamSummary`; ``stop()``
    may be called from any thread or a signal handler. ``report`` receives the progress
    lines (stderr in the CLI).
    """

    def __init__(
        self,
        source: Source,
        sinks: list[Sink],
        anonymizer: Anonymizer,
        options: StreamOptions | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        if not sinks:
            raise ValueError("a stream needs at least one sink")
        self.source = source
        self.sinks = list(sinks)
        self.anonymizer = anonymizer
        self.options = options or StreamOptions()
        self.report = _quiet_when_broken(report) if report is not None else (lambda line: None)
        self.latency = LatencyStats()
        self.summary = StreamSummary(source=source.name)
        self._inbox: FrameQueue[_Captured] = FrameQueue(self.options.queue_size, self.options.latency)
        self._outbox: FrameQueue[_Processed] = FrameQueue(self.options.queue_size, self.options.latency)
        self._timeline = Timeline()
        self._stop = threading.Event()
        self._capture_done = threading.Event()
        self._processing_done = threading.Event()
        self._output_done = threading.Event()
        self._lock = threading.Lock()
        self._active_sinks = list(sinks)
        self._processed_once = False  # whether any frame went through detection successfully

    # -- control --------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        """Ask the stream to end: capture stops, queued frames are still sent, sinks are finalised."""
        self._end(reason)
        self._stop.set()

    def _end(self, reason: str, error: str | None = None) -> None:
        with self._lock:  # the first reason wins: later ones are consequences
            if not self.summary.end_reason:
                self.summary.end_reason = reason
            if error and self.summary.error is None:
                self.summary.error = error

    def _fatal(self, error: str) -> None:
        self._end("error", error)
        self._stop.set()

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> StreamSummary:
        """Stream until the source ends, ``stop()`` is called or something fails for good."""
        threads = [
            threading.Thread(target=self._capture_loop, name="streamanon-capture", daemon=True),
            threading.Thread(target=self._processing_loop, name="streamanon-process", daemon=True),
            threading.Thread(target=self._output_loop, name="streamanon-output", daemon=True),
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        next_report = started + self.options.report_every if self.options.report_every > 0 else None
        reported_at, reported_out = started, 0
        try:
            while not self._output_done.wait(_POLL):
                now = time.monotonic()
                if self.options.duration is not None and now - started >= self.options.duration:
                    self.stop(f"{self.options.duration:g} s duration reached")
                if next_report is not None and now >= next_report:
                    out = self.summary.frames_out
                    fps = (out - reported_out) / max(now - reported_at, 1e-9)
                    self.report(self._progress_line(now - started, fps))
                    reported_at, reported_out = now, out
                    next_report += self.options.report_every
        except BaseException as exc:
            # Ctrl-C without a signal handler (library use), or a failing callback: still finish the
            # output before passing it on.
            self.stop("interrupted" if isinstance(exc, KeyboardInterrupt) else f"error: {type(exc).__name__}")
            self._output_done.wait()
            raise
        self._stop.set()  # the output has ended: nothing upstream is needed any more
        for thread in threads[1:]:
            thread.join()
        # Capture may sit in a blocking read for up to the stall timeout; it ends itself afterwards.
        threads[0].join(timeout=1.0)
        summary = self.summary
        summary.seconds = time.monotonic() - started
        summary.dropped = self._inbox.dropped + self._outbox.dropped
        summary.latency = self.latency.total()
        summary.outputs = [_describe_outputs(sink) for sink in self.sinks]
        if not summary.end_reason:
            summary.end_reason = "stopped"
        if summary.error is None and summary.frames_out == 0:
            # Nothing was recorded or sent: a script must not take this run for a success.
            if summary.frames_in == 0:
                summary.error = f"no frame arrived from {self.source.name}; nothing was written"
            elif summary.undelivered:
                summary.error = f"no frame reached the output ({summary.undelivered} undelivered)"
        return summary

    def _progress_line(self, elapsed: float, fps: float) -> str:
        s = self.summary
        return (
            f"{elapsed:.{0 if self.options.report_every >= 1 else 1}f} s: {s.frames_in} frames in, {s.frames_out} out, "
            f"{self._inbox.dropped + self._outbox.dropped} dropped, {s.late} late, {s.failed} failed, "
            f"{_plural(s.reconnects, 'reconnect')}; "
            f"last {self.options.report_every:g} s: {self.latency.window().line()}, {fps:.1f} fps"
        )

    # -- capture --------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        source, retries = self.source, self.options.max_retries
        attempts = 0
        try:
            while not self._stop.is_set():
                try:
                    source.open()
                    for image, source_time in source.frames(self._stop):
                        attempts = 0  # a frame arrived: the connection works again
                        self._capture(image, source_time)
                        if self._stop.is_set():
                            break
                    if self._stop.is_set():
                        break
                    if not source.live or source.finite:
                        self._end("end of input")
                        break
                    raise SourceError("the stream ended")
                except SourceError as exc:
                    if not source.live:
                        self._end("source failed", f"source {source.name}: {exc}")
                        break
                    attempts += 1
                    if attempts > retries:
                        error = f"source {source.name}: {exc}; gave up after {retries} reconnect attempt(s)"
                        self._end("source failed", error)
                        break
                    delay = backoff(attempts)
                    self.report(f"source {source.name}: {exc}; reconnecting in {delay:.1f} s "
                                f"(attempt {attempts} of {retries})")  # fmt: skip
                    self.summary.reconnects += 1
                    self._stop.wait(delay)
                finally:
                    source.close()
        except UserError as exc:
            self._end("source failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - ends the stream with one line, output still finalised
            log.debug("capture failed", exc_info=True)
            self._end("source failed", f"internal error reading {source.name}: {type(exc).__name__}: {exc}")
        finally:
            self._capture_done.set()

    def _capture(self, image: np.ndarray, source_time: float | None) -> None:
        now = time.monotonic()
        t = self._timeline(source_time, now)
        frame = Frame(image=image, index=self.summary.frames_in, pts=round(t / TIME_BASE), time_base=TIME_BASE)
        self.summary.frames_in += 1
        self._inbox.put(_Captured(frame, now, t), self._stop)

    # -- processing -----------------------------------------------------------------------
    def _processing_loop(self) -> None:
        failures = 0
        try:
            while True:
                finished = self._capture_done.is_set() or self._stop.is_set()
                item = self._inbox.get(_POLL)
                if item is None:
                    if finished:
                        break
                    continue
                processed, failed = self._anonymize(item)
                failures = failures + 1 if failed else 0
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    self._fatal(f"processing failed on {failures} frames in a row; stopping rather than sending "
                                "frames whose faces were never looked for (run with -v for the errors)")  # fmt: skip
                if processed is not None:
                    self._outbox.put(processed, None if self.options.latency == "realtime" else self._stop)
        except Exception as exc:  # noqa: BLE001
            log.debug("processing loop failed", exc_info=True)
            self._fatal(f"internal error in processing: {type(exc).__name__}: {exc}")
        finally:
            self._processing_done.set()

    def _anonymize(self, item: _Captured) -> tuple[_Processed | None, bool]:
        """The anonymized frame (or None: dropped) and whether processing failed on it."""
        frame = item.frame
        too_old = time.monotonic() - item.captured_at > self.options.max_latency
        # Skip detection only to catch up with a newer frame that is already waiting: the freshest
        # frame is always processed in full, so detection never starves, whatever max_latency is.
        if self.options.latency == "realtime" and too_old and len(self._inbox) and self._processed_once:
            self.summary.late += 1
            return self._fail_closed(item), False
        try:
            image, stats = self.anonymizer.process_frame(frame)
        except Exception as exc:  # noqa: BLE001 - any stage error: fail closed for this frame
            self.summary.failed += 1
            if self.summary.failed == 1 or self.summary.failed % 100 == 0:
                log.warning(
                    "processing frame %d failed (%s: %s); sending it with known faces blurred (%d failures so far)",
                    frame.index, type(exc).__name__, exc, self.summary.failed,
                )  # fmt: skip
            return self._fail_closed(item), True
        self._processed_once = True
        return _Processed(image, item.captured_at, item.t, stats), False

    def _fail_closed(self, item: _Captured) -> _Processed | None:
        """The frame with every known face blurred; None (drop it) when nothing is known yet."""
        if not self._processed_once:
            self.summary.withheld += 1  # no frame was ever looked at: this one would show faces unseen
            return None
        try:
            image = self.anonymizer.hide_known_faces(item.frame.image)
        except Exception:  # noqa: BLE001 - a frame that cannot be protected is not sent
            log.warning("could not blur the known faces of frame %d; dropping it", item.frame.index, exc_info=True)
            self.summary.withheld += 1
            return None
        return _Processed(image, item.captured_at, item.t, None)

    # -- output ---------------------------------------------------------------------------
    def _output_loop(self) -> None:
        attempts: dict[int, int] = {}
        retry_at: dict[int, float] = {}
        try:
            while True:
                finished = self._processing_done.is_set()
                item = self._outbox.get(_POLL)
                if item is None:
                    if finished:
                        break
                    continue
                self._deliver(item, attempts, retry_at)
                if not self._active_sinks:
                    self.stop("every output closed")
                    break
        except UserError as exc:
            self._fatal(str(exc))
        except Exception as exc:  # noqa: BLE001
            log.debug("output loop failed", exc_info=True)
            self._fatal(f"internal error writing the output: {type(exc).__name__}: {exc}")
        finally:
            self._close_sinks()
            self._output_done.set()

    def _deliver(self, item: _Processed, attempts: dict[int, int], retry_at: dict[int, float]) -> None:
        delivered = False
        for sink in list(self._active_sinks):
            key = id(sink)
            if retry_at.get(key, 0.0) > time.monotonic():
                continue  # a network sink waiting for its next reconnect attempt
            if sink.nominal_fps is None:
                sink.nominal_fps = self.source.fps
            try:
                sink.write(item.image, item.t)
            except SinkError as exc:
                sink.reset()
                attempts[key] = attempts.get(key, 0) + 1
                if attempts[key] > self.options.max_retries:
                    raise UserError(f"output {sink.name}: {exc}; gave up after {self.options.max_retries} "
                                    "reconnect attempt(s)") from None  # fmt: skip
                delay = backoff(attempts[key])
                retry_at[key] = time.monotonic() + delay
                self.report(f"output {sink.name}: {exc}; retrying in {delay:.1f} s "
                            f"(attempt {attempts[key]} of {self.options.max_retries})")  # fmt: skip
                continue
            except SinkClosed as exc:
                self._active_sinks.remove(sink)
                if sink.required:
                    self.stop(f"{sink.name} closed: {exc}")
                else:
                    self.report(f"{sink.name} closed ({exc}); the stream goes on")
                continue
            attempts[key] = 0
            delivered = True
        if not delivered:
            self.summary.undelivered += 1
            return
        self.latency.add(time.monotonic() - item.captured_at)
        self.summary.frames_out += 1
        if item.stats is not None:
            self.summary.faces += item.stats.faces
            self.summary.track_ids.update(item.stats.track_ids)

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except (UserError, SinkError) as exc:
                self._end("error", f"finishing {sink.name}: {exc}")
            except Exception as exc:  # noqa: BLE001
                log.debug("closing %s failed", sink.name, exc_info=True)
                self._end("error", f"finishing {sink.name}: {type(exc).__name__}: {exc}")



def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _describe_outputs(sink: Sink) -> str:
    """The files a recording sink finished (first and last of many segments), else the sink's name."""
    paths = [str(path) for path in sink.outputs]
    if not paths:
        return f"{sink.name} (no file finished)" if getattr(sink, "kind", None) == "file" else sink.name
    if len(paths) > 3:
        return f"{paths[0]} ... {paths[-1]} ({len(paths)} files)"
    return ", ".join(paths)
