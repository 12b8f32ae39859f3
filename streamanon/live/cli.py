"""``streamanon stream SOURCE SINK``: anonymize a live feed with bounded latency.

Registered on the main command group by :func:`streamanon.cli._register_optional_commands`.
Everything but frame bytes goes to stderr, so ``-`` (stdout) can feed a player.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

import click

from ..cli import config_from_options, pipeline_options
from ..errors import UserError
from .queues import LATENCY_POLICIES
from .raw import RAW_PIX_FMTS, parse_size
from .runner import StreamOptions, StreamRunner
from .sinks import PreviewSink, SinkSettings, display_available, open_sink, segment_index
from .sources import RawSource, SourceSettings, local_path, open_source


def _say(line: str) -> None:
    try:
        click.echo(f"streamanon: {line}", err=True)
    except OSError:
        pass  # stderr is gone (piped into a reader that quit): the recording goes on without it


def _key_values(values: tuple[str, ...], option: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{option} takes KEY=VALUE (an FFmpeg option), not '{item}'")
        options[key] = value
    return options


@contextmanager
def _stop_on_signals(runner: StreamRunner) -> Iterator[None]:
    """SIGINT/SIGTERM (and SIGHUP) finish the stream cleanly; a second one exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread (e.g. an embedding app)
        return
    signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    received: list[str] = []

    def handler(signum, _frame) -> None:
        name = signal.Signals(signum).name
        if received:
            _say(f"{name} again: exiting at once (the file being written may be left unfinished)")
            os._exit(130)
        received.append(name)
        _say(f"{name}: stopping; finishing the output (send it again to exit at once)")
        runner.stop(f"{name} received")

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.command("stream")
@click.argument("source")
@click.argument("sink")
@pipeline_options
@click.option("--size", "size_text", metavar="WxH", help="Cameras: capture size. Raw stdin: the frame size (required).")
@click.option("--fps", type=click.FloatRange(0.1, 1000.0),
              help="Cameras: capture rate. Raw stdin: frame rate of the timestamps.")  # fmt: skip
@click.option(
    "--pix-fmt",
    help=f"Cameras: wire format (e.g. mjpeg, yuyv422). Raw stdin: {'|'.join(RAW_PIX_FMTS)} [rgb24].",
)
@click.option("--source-format", help="Read SOURCE with this FFmpeg input device, e.g. avfoundation, dshow, x11grab.")
@click.option("--source-option", "source_options", multiple=True, metavar="KEY=VALUE",
              help="Extra FFmpeg option for the source (repeatable), e.g. rtsp_transport=udp.")  # fmt: skip
@click.option("--sink-option", "sink_options", multiple=True, metavar="KEY=VALUE",
              help="Extra FFmpeg muxer/protocol option for the output (repeatable).")  # fmt: skip
@click.option("--output-pix-fmt", type=click.Choice(RAW_PIX_FMTS),
              help="Raw stdout: byte layout [that of raw stdin, else rgb24].")  # fmt: skip
@click.option("--latency", type=click.Choice(LATENCY_POLICIES), default="realtime", show_default=True,
              help="realtime: drop the oldest waiting frames to keep up; "
                   "lossless: process every frame, however late.")  # fmt: skip
@click.option("--queue-size", type=click.IntRange(1, 1000), default=2, show_default=True,
              help="Frames waiting between capture, processing and output.")  # fmt: skip
@click.option("--max-latency", type=click.FloatRange(0.0, min_open=True), default=1.0, show_default=True,
              help="realtime: a frame older than this many seconds, with a newer one waiting, skips detection "
                   "(known faces are blurred).")  # fmt: skip
@click.option("--segment-seconds", type=click.FloatRange(0.0, min_open=True),
              help="Recordings: start a new file (NAME_00000.EXT, NAME_00001.EXT, ...) "
                   "every this many seconds.")  # fmt: skip
@click.option("--stall-timeout", type=click.FloatRange(0.0, min_open=True), default=10.0, show_default=True,
              help="Seconds without a frame (or to connect) before the source is reconnected.")  # fmt: skip
@click.option("--max-retries", type=click.IntRange(0, 1_000_000), default=5, show_default=True,
              help="Consecutive failed reconnects before the stream ends with an error.")  # fmt: skip
@click.option("--report-every", type=click.FloatRange(0.0), default=10.0, show_default=True,
              help="Seconds between progress lines with latency p50/p99 (0: only at the end).")  # fmt: skip
@click.option("--duration", type=click.FloatRange(0.0, min_open=True), help="Stop after this many seconds.")
@click.option("--preview", is_flag=True, help="Also show the output in a window, when a display exists.")
@click.option("--overwrite", is_flag=True, help="Replace an existing recording (or segments).")
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary lines (errors still go to stderr).")
def stream_command(
    source: str,
    sink: str,
    size_text: str | None,
    fps: float | None,
    pix_fmt: str | None,
    source_format: str | None,
    source_options: tuple[str, ...],
    sink_options: tuple[str, ...],
    output_pix_fmt: str | None,
    latency: str,
    queue_size: int,
    max_latency: float,
    segment_seconds: float | None,
    stall_timeout: float,
    max_retries: int,
    report_every: float,
    duration: float | None,
    preview: bool,
    overwrite: bool,
    quiet: bool,
    **opts,
) -> None:
    """Anonymize a live SOURCE into SINK, frame by frame, with bounded latency.

    \b
    SOURCE: /dev/videoN (camera), rtsp://, udp://, tcp://, srt://, http(s)://,
            a video file (played at its own rate), or - (raw frames on stdin).
    SINK:   a file (.mp4, .mkv, .ts...), udp://host:port or tcp://host:port (MPEG-TS),
            rtsp:// or rtmp:// (push to a server), - (raw frames on stdout), or preview.

    Runs until the source ends, --duration passes, or Ctrl-C / SIGTERM, which finish the
    output cleanly. Progress with latency p50/p99 goes to stderr every --report-every seconds.
    """
    from ..pipeline import Anonymizer

    size = parse_size(size_text) if size_text else None
    source_settings = SourceSettings(
        size=size, fps=fps, pix_fmt=pix_fmt, format=source_format, stall_timeout=stall_timeout,
        open_timeout=stall_timeout, options=_key_values(source_options, "--source-option"),
    )  # fmt: skip
    live_source = open_source(source, source_settings)
    if output_pix_fmt is None:
        output_pix_fmt = live_source.pix_fmt if isinstance(live_source, RawSource) else "rgb24"
    config = config_from_options(opts)
    _check_distinct(source, sink, segment_seconds)
    sink_settings = SinkSettings(
        encode=config.encode, segment_seconds=segment_seconds, overwrite=overwrite, raw_pix_fmt=output_pix_fmt,
        open_timeout=stall_timeout, write_timeout=stall_timeout,
        options=_key_values(sink_options, "--sink-option"),
    )  # fmt: skip
    sinks = [open_sink(sink, sink_settings, announce=None if quiet else _say)]
    if preview and sink != "preview":
        if display_available():
            sinks.append(PreviewSink(required=False))
        else:
            _say("no display (DISPLAY/WAYLAND_DISPLAY unset): --preview ignored")

    if latency == "realtime" and config.generate.guard_background is None:
        # The identity guard's choices and re-checks do not hold up the stream (generate.guard_background).
        config = config.with_overrides({"generate.guard_background": True})
    anonymizer = Anonymizer(config)
    options = StreamOptions(
        latency=latency, queue_size=queue_size, max_latency=max_latency, max_retries=max_retries,
        report_every=0.0 if quiet else report_every, duration=duration,
    )  # fmt: skip
    runner = StreamRunner(live_source, sinks, anonymizer, options, report=_say)
    if not quiet:
        background = ", identity guard in the background" if anonymizer.guard_in_background else ""
        _say(f"streaming {live_source.name} -> {sink} [{anonymizer.backend_name}, {latency}, queue {queue_size}"
             f"{background}]; Ctrl-C or SIGTERM stops and finishes the output")  # fmt: skip
    with _stop_on_signals(runner):
        summary = runner.run()
    if not quiet:
        _say(summary.line())
    if summary.error:
        raise UserError(summary.error)


def _check_distinct(source: str, sink: str, segment_seconds: float | None) -> None:
    """The recording must not overwrite the input: the same file (by any name, file: URLs
    included) or, when segmented, one of the segment names it will write."""
    from ..io.paths import same_file

    source_path, sink_path = local_path(source), local_path(sink)
    if source_path is None or sink_path is None or not source_path.is_file():
        return
    if same_file(source_path, sink_path):
        raise UserError(f"output must differ from the input: {sink}")
    same_folder = source_path.resolve().parent == sink_path.absolute().resolve().parent
    if segment_seconds and same_folder and segment_index(source_path, sink_path) is not None:
        raise UserError(f"the input {source} is one of the segments {sink} would write: choose another name")
