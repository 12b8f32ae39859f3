"""Live frame sources: cameras, network streams, a video file played as a feed, raw frames on stdin.

Every source decodes to RGB ``uint8`` images, upright as a player shows them (a phone clip's
display rotation is applied, so detection sees upright faces and sinks, which may not carry a
display matrix, get the picture the right way up), and says when each frame was taken (its own
clock, when it has one). A source only reads; reconnecting, pacing the queue and timing
are the runner's job. Transient trouble (a stall, a dropped connection, a refused connect)
raises :class:`SourceError`, which the runner answers by reconnecting; a problem that no
retry can fix (unknown scheme, missing camera, protocol not built in) is a
:class:`~streamanon.errors.UserError`.

PyAV specifics relied on here: ``av.open(url, timeout=(open_s, read_s))`` installs an
interrupt callback, so a blocked open or read ends with ``av.ExitError`` after that many
seconds without data; blocking reads release the GIL, so the other stages keep running.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

import av
import numpy as np

from ..errors import UserError
from ..io.video import decoded_to_rgb, nearest_quarter_turn, rotate_tag_degrees, to_display
from .raw import RAW_PIX_FMTS, check_raw_format, frame_bytes, raw_to_rgb

log = logging.getLogger(__name__)

# URL schemes read through FFmpeg's network protocols (SRT only where FFmpeg was built with libsrt).
NETWORK_SCHEMES: frozenset[str] = frozenset(
    {"rtsp", "rtsps", "udp", "tcp", "srt", "http", "https", "rtmp", "rtmps", "rtp"}
)
# Defaults per scheme that make a live feed robust; --source-option overrides them.
_SCHEME_OPTIONS: dict[str, dict[str, str]] = {
    # A burst larger than the socket buffer would otherwise end the stream with "circular buffer overrun".
    "udp": {"overrun_nonfatal": "1"},
    # RTP over the RTSP TCP connection: no lost packets, hence no smeared frames.
    "rtsp": {"rtsp_transport": "tcp"},
    "rtsps": {"rtsp_transport": "tcp"},
}


class SourceError(Exception):
    """A transient source failure (stall, disconnect, refused connection); worth a reconnect."""


@dataclass(frozen=True)
class SourceSettings:
    """How to open a source (from the ``stream`` command's options)."""

    size: tuple[int, int] | None = None  # cameras: requested size; raw stdin: the frame size
    fps: float | None = None  # cameras: requested rate; raw stdin: timestamps at this rate
    pix_fmt: str | None = None  # cameras: input_format (e.g. mjpeg, yuyv422); raw stdin: byte layout
    format: str | None = None  # force an FFmpeg input format/device (e.g. avfoundation, x11grab)
    stall_timeout: float = 10.0  # seconds without a frame before the source counts as stalled
    open_timeout: float = 10.0  # seconds to connect and find the video stream
    options: dict[str, str] = field(default_factory=dict)  # extra FFmpeg options (--source-option)


class Source(ABC):
    """A feed of RGB frames. ``open`` -> ``frames`` -> ``close``, possibly again after a failure."""

    name: str
    live: bool  # True: an end or stall is a failure worth reconnecting; False: the end of input
    finite: bool = False  # known after open: the input declares a duration, so its end is the end
    fps: float | None = None  # nominal frame rate once known (None: unknown)

    @abstractmethod
    def open(self) -> None:
        """Connect; raises :class:`SourceError` (retry) or :class:`UserError` (give up)."""

    @abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[tuple[np.ndarray, float | None]]:
        """Yield ``(rgb_image, source_seconds_or_None)`` until the end, ``stop``, or a failure."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (safe to call twice)."""


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return " ".join(str(text).split())


class AVSource(Source):
    """Anything FFmpeg can open: network URLs, V4L2 cameras, other capture devices, video files.

    ``paced`` plays a file at its own frame rate, as a camera would deliver it.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        format: str | None = None,
        options: dict[str, str] | None = None,
        live: bool = True,
        paced: bool = False,
        stall_timeout: float = 10.0,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.name = name or url
        self.format = format
        self.options = dict(options or {})
        self.live = live
        self.paced = paced
        self.stall_timeout = stall_timeout
        self.open_timeout = open_timeout
        self.damaged_packets = 0
        self.rotation = 0  # display rotation of the last frame (degrees counter-clockwise), undone on decode
        self._tag_rotation = 0
        self._odd_rotation_warned = False
        self._container: av.container.InputContainer | None = None
        self._opened_before = False

    def open(self) -> None:
        self.close()
        try:
            container = av.open(
                self.url, format=self.format, options=self.options, timeout=(self.open_timeout, self.stall_timeout)
            )
        except av.ProtocolNotFoundError:
            scheme = self.url.split("://", 1)[0]
            raise UserError(f"this FFmpeg build (PyAV {av.__version__}) cannot read {scheme}:// streams") from None
        except av.ExitError:
            raise SourceError(f"no answer within {self.open_timeout:g} s") from None
        except PermissionError:
            hint = "for a camera: is the user in the 'video' group?"
            raise UserError(f"no permission to open {self.name} ({hint})") from None
        except FileNotFoundError:
            if self._opened_before:  # a camera unplugged mid-stream may come back
                raise SourceError(f"{self.name} is gone") from None
            raise UserError(f"source not found: {self.name}") from None
        except ValueError as exc:  # an unknown --source-format and the like: no retry changes it
            raise UserError(f"cannot open {self.name}: {_describe(exc)}") from None
        except av.HTTPClientError as exc:  # 4xx: the request itself is wrong (404, 403, ...)
            if self._opened_before:
                raise SourceError(f"cannot open: {_describe(exc)}") from None
            raise UserError(f"cannot open {self.name}: {_describe(exc)}") from None
        except (av.FFmpegError, OSError) as exc:
            if not self._opened_before and (not self.live or getattr(exc, "errno", None) == errno.ENOTTY):
                # A file that is not a video, or a device that is no camera (/dev/null): final.
                raise UserError(f"cannot open {self.name}: {_describe(exc)}") from None
            raise SourceError(f"cannot open: {_describe(exc)}") from None
        if not container.streams.video:
            container.close()
            raise UserError(f"{self.name} has no video stream")
        stream = container.streams.video[0]
        # Slice threads add no delay; frame threads (the default for files) hold back several frames.
        stream.thread_type = "SLICE" if self.live else "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else None
        # A recording behind a URL (an MP4 over HTTP) has a duration; a live feed has none. It is
        # played at its own rate like a local file, and its end is the end (a reconnect would replay it).
        self.finite = bool(container.duration)
        self._tag_rotation = rotate_tag_degrees(stream)
        self._container = container
        self._opened_before = True
        log.info("opened %s: %dx%d %s at %s fps", self.name, stream.codec_context.width,
                 stream.codec_context.height, stream.codec_context.name, self.fps)  # fmt: skip

    def frames(self, stop: threading.Event) -> Iterator[tuple[np.ndarray, float | None]]:
        if self._container is None:
            raise RuntimeError("open() the source first")
        stream = self._container.streams.video[0]
        last_frame = time.monotonic()
        pace_origin: tuple[float, float] | None = None  # (wall, source) times of the first frame
        try:
            # Every stream's packets come back (and are ignored but for the video's), so that a feed
            # whose audio flows while its video has stopped still counts as stalled.
            for packet in self._container.demux():
                if stop.is_set():
                    return
                decoded: list[av.VideoFrame] = []
                if packet.stream.index == stream.index:
                    try:
                        decoded = packet.decode()  # the final empty packet flushes the decoder
                    except av.InvalidDataError as exc:
                        self.damaged_packets += 1  # like ffmpeg: skip the damaged packet, keep the stream
                        log.debug("%s: skipped a damaged packet (%s)", self.name, _describe(exc))
                now = time.monotonic()
                if not decoded and now - last_frame > self.stall_timeout:
                    # Data arrives but no picture (only audio, or garbage): as good as a stall.
                    raise SourceError(f"no picture for {self.stall_timeout:g} s")
                for frame in decoded:
                    seconds = float(frame.time) if frame.time is not None else None
                    if (self.paced or self.finite) and seconds is not None:
                        if pace_origin is None:
                            pace_origin = (now, seconds)
                        wait = (seconds - pace_origin[1]) - (time.monotonic() - pace_origin[0])
                        if wait > 0 and stop.wait(wait):
                            return
                    last_frame = time.monotonic()
                    yield self._upright(frame), seconds
        except av.ExitError:
            # PyAV's read timeout. Frames still inside the decoder (B-frame delay) are complete: keep them.
            yield from self._drain(stream)
            raise SourceError(f"no data for {self.stall_timeout:g} s") from None
        except (av.FFmpegError, OSError) as exc:
            yield from self._drain(stream)
            raise SourceError(f"read failed: {_describe(exc)}") from None

    def _drain(self, stream: av.VideoStream) -> Iterator[tuple[np.ndarray, float | None]]:
        try:
            frames = stream.codec_context.decode(None)
        except (av.FFmpegError, ValueError):
            return
        for frame in frames:
            yield self._upright(frame), (float(frame.time) if frame.time is not None else None)

    def _upright(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as RGB, turned the way a player shows it (the display matrix each decoded frame
        carries, else the stream's legacy ``rotate`` tag), like ``streamanon file`` does for detection.
        The output then holds upright frames and no rotation: raw pipes and network streams carry none."""
        degrees = getattr(frame, "rotation", 0) or self._tag_rotation
        rotation = nearest_quarter_turn(degrees)
        off = (rotation - degrees) % 360
        if min(off, 360 - off) > 0.5 and not self._odd_rotation_warned:
            log.warning("%s: display rotation of %g degrees is not a multiple of 90; turning the frames by %d",
                        self.name, degrees, rotation)  # fmt: skip
            self._odd_rotation_warned = True
        if rotation != self.rotation:
            log.info("%s: frames are displayed rotated by %d degrees; turned upright", self.name, rotation)
            self.rotation = rotation
        image = decoded_to_rgb(frame)
        return to_display(image, rotation) if rotation else image

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, OSError) as exc:
                log.debug("closing %s: %s", self.name, exc)


class RawSource(Source):
    """Raw frames of a known size and pixel format on a pipe (stdin by default).

    Reads are polled (select) so that a stop request is seen within a fraction of a second
    even while the writer is silent; a silent pipe is waited for, as ``cat`` would.
    """

    live = False  # a pipe cannot be reopened: its end is the end of the stream

    def __init__(
        self,
        width: int,
        height: int,
        pix_fmt: str = "rgb24",
        fps: float | None = None,
        stream: BinaryIO | None = None,
        stall_timeout: float = 10.0,
        name: str = "stdin",
    ) -> None:
        check_raw_format(pix_fmt, width, height)
        self.width, self.height, self.pix_fmt = width, height, pix_fmt
        self.fps = fps
        self.name = name
        self.stall_timeout = stall_timeout
        self._stream = stream
        self._frame_size = frame_bytes(pix_fmt, width, height)
        self.trailing_bytes = 0

    def open(self) -> None:
        if self._stream is None:
            self._stream = sys.stdin.buffer

    def _read_chunk(self, fd: int, wanted: int, stop: threading.Event) -> bytes | None:
        """Up to ``wanted`` bytes; b"" at the end of input; None when stopped."""
        silent_since = time.monotonic()
        warned = False
        while not stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
            except (OSError, ValueError):  # select() cannot poll this kind of file (Windows pipes)
                ready = [fd]
            if ready:
                return os.read(fd, wanted)
            if not warned and time.monotonic() - silent_since > self.stall_timeout:
                log.warning("no data on %s for %g s; still waiting", self.name, self.stall_timeout)
                warned = True
        return None

    def frames(self, stop: threading.Event) -> Iterator[tuple[np.ndarray, float | None]]:
        if self._stream is None:
            raise RuntimeError("open() the source first")
        fd = self._stream.fileno()
        index = 0
        while True:
            buffer = bytearray()
            while len(buffer) < self._frame_size:
                chunk = self._read_chunk(fd, self._frame_size - len(buffer), stop)
                if chunk is None:
                    return
                if not chunk:
                    if buffer:
                        self.trailing_bytes = len(buffer)
                        log.warning(
                            "%s ended inside a frame: ignored %d trailing bytes (one %dx%d %s frame is %d bytes)",
                            self.name, len(buffer), self.width, self.height, self.pix_fmt, self._frame_size,
                        )  # fmt: skip
                    return
                buffer += chunk
            seconds = index / self.fps if self.fps else None
            index += 1
            yield raw_to_rgb(buffer, self.pix_fmt, self.width, self.height), seconds

    def close(self) -> None:
        pass  # stdin belongs to the process


def _scheme(spec: str) -> str | None:
    if "://" not in spec:
        return None
    return spec.split("://", 1)[0].lower()


def local_path(spec: str) -> Path | None:
    """The local file a source or sink spec names (a path, or a ``file://`` URL); None for the
    rest (``-``, ``preview``, network URLs). One rule for sources, sinks and the check that an
    output is not its input."""
    if spec in ("-", "preview"):
        return None
    scheme = _scheme(spec)
    if scheme == "file":
        return Path(spec[len("file://"):])
    return Path(spec) if scheme is None else None


def _is_camera(spec: str) -> bool:
    if spec.startswith("/dev/video"):
        return True
    try:
        return stat.S_ISCHR(os.stat(spec).st_mode)
    except OSError:
        return False


def open_source(spec: str, settings: SourceSettings | None = None) -> Source:
    """Build the source named by ``spec`` (nothing is opened yet).

    ``-``: raw frames on stdin (needs ``size``); ``/dev/videoN``: a V4L2 camera;
    ``rtsp://``, ``udp://``, ``tcp://``, ``srt://``, ``http(s)://``, ``rtmp://``: network
    streams; any other existing path: a video file played at its own frame rate. With
    ``settings.format`` the spec goes to that FFmpeg input device as is.
    """
    settings = settings or SourceSettings()
    scheme = _scheme(spec)
    common = {"stall_timeout": settings.stall_timeout, "open_timeout": settings.open_timeout}

    if spec == "-":
        if settings.size is None:
            raise UserError("raw frames on stdin need --size WIDTHxHEIGHT (and --pix-fmt if not rgb24)")
        pix_fmt = settings.pix_fmt or "rgb24"
        if pix_fmt not in RAW_PIX_FMTS:
            raise UserError(f"--pix-fmt for raw stdin must be one of {', '.join(RAW_PIX_FMTS)}, not '{pix_fmt}'")
        if settings.options or settings.format:
            raise UserError("--source-option and --source-format do not apply to raw stdin")
        return RawSource(*settings.size, pix_fmt=pix_fmt, fps=settings.fps, stall_timeout=settings.stall_timeout)

    if settings.format is not None or _is_camera(spec):
        # A capture device: V4L2 unless another FFmpeg device is named (avfoundation, dshow, x11grab...).
        fmt = settings.format or "v4l2"
        if fmt in ("v4l2", "video4linux2") and not Path(spec).exists():
            raise UserError(f"camera not found: {spec}")
        options: dict[str, str] = {}
        if settings.size is not None:
            options["video_size"] = f"{settings.size[0]}x{settings.size[1]}"
        if settings.fps is not None:
            options["framerate"] = f"{Fraction(settings.fps).limit_denominator(1001)}"
        if settings.pix_fmt is not None:
            # V4L2 calls the camera's wire format input_format (mjpeg, yuyv422, h264...); others pixel_format.
            options["input_format" if fmt in ("v4l2", "video4linux2") else "pixel_format"] = settings.pix_fmt
        options.update(settings.options)
        return AVSource(spec, format=fmt, options=options, live=True, **common)

    _only_for_cameras(settings, spec)
    if scheme in NETWORK_SCHEMES:
        options = dict(_SCHEME_OPTIONS.get(scheme, {}))
        options.update(settings.options)
        return AVSource(spec, options=options, live=True, **common)
    if scheme not in (None, "file"):
        raise UserError(
            f"unknown source '{spec}': use -, /dev/videoN, a video file, or a URL "
            f"({', '.join(s + '://' for s in sorted(NETWORK_SCHEMES))})"
        )
    path = local_path(spec)
    if not path.exists():
        raise UserError(f"source not found: {spec}")
    if path.is_dir():
        raise UserError(f"source is a folder, not a video or a stream: {spec}")
    # Absolute: FFmpeg would read the text before a colon of a relative name (clip:1.mp4) as a protocol.
    return AVSource(str(path.absolute()), name=str(path), options=dict(settings.options), live=False, paced=True,
                    **common)  # fmt: skip


def _only_for_cameras(settings: SourceSettings, spec: str) -> None:
    given = [name for name, value in (("--size", settings.size), ("--fps", settings.fps),
                                      ("--pix-fmt", settings.pix_fmt)) if value is not None]  # fmt: skip
    if given:
        raise UserError(f"{', '.join(given)} apply to cameras and raw stdin only, not to {spec}")
