"""Live frame sinks: recordings (optionally segmented), MPEG-TS over UDP/TCP, RTSP/RTMP push,
raw frames on stdout, and a preview window.

Sinks open on their first frame (only then is the frame size known) and take the output
time of every frame from the runner's :class:`~streamanon.live.timeline.Timeline`.

* **Recordings** are written through :func:`~streamanon.io.paths.atomic_output`: a file (or
  segment) appears under its name only once it is finished, and every finished one plays.
  MP4/MOV recordings are *fragmented* (a self-contained fragment per keyframe, every 2 s),
  so the hidden partial file of a process that was killed outright still plays up to its
  last fragment, and finishing never has to rewrite a long file.
* **Encoding** is tuned for latency (x264/x265 ``tune=zerolatency``: no B-frames, no
  look-ahead), so a frame leaves the encoder as soon as it is handed over; network streams
  get a keyframe every second so that a receiver joining late starts quickly.
* **udp:// and tcp://** are sent from Python sockets (the muxer writes into a small
  file-like object): FFmpeg's own protocols hold Python's GIL while they connect, which
  would freeze capture and Ctrl-C handling for as long as a receiver is missing.
  ``rtsp://``, ``rtmp://`` and ``srt://`` use FFmpeg's protocols (connecting briefly holds
  the GIL; a refused connection returns at once).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import parse_qs, urlsplit

import av
import cv2
import numpy as np

from ..config import EncodeConfig
from ..errors import UserError
from ..io.paths import VIDEO_EXTENSIONS, atomic_output, is_video_path
from ..io.video import choose_pix_fmt, container_video_encoder, encoder_options
from .raw import RAW_PIX_FMTS, check_raw_format, rgb_to_raw
from .sources import local_path

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)  # MPEG-TS's clock; fine-grained enough for any frame rate
TS_PACKET = 188
UDP_PAYLOAD = 7 * TS_PACKET  # 1316: seven TS packets fit a 1500-byte Ethernet frame
MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4
_X26X = ("libx264", "libx264rgb", "libx265")
# Pushed streams: container format by URL scheme.
_PUSH_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv", "srt": "mpegts"}
_PUSH_OPTIONS = {"rtsp": {"rtsp_transport": "tcp"}, "rtsps": {"rtsp_transport": "tcp"}}
Announce = Callable[[str], None]  # receives one informational line (the CLI prints it on stderr)
_FRAGMENTED = {"movflags": "+frag_keyframe+empty_moov+default_base_moof"}


class SinkError(Exception):
    """A transient sink failure (receiver gone, connection refused): retry later."""


class SinkClosed(Exception):
    """The consumer went away on purpose (stdout reader exited, preview window closed)."""


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return " ".join(str(text).split())


@dataclass(frozen=True)
class SinkSettings:
    """How to write the output (from the ``stream`` command's options)."""

    encode: EncodeConfig = field(default_factory=EncodeConfig)
    segment_seconds: float | None = None  # recordings: start a new file every this many seconds
    overwrite: bool = False
    raw_pix_fmt: str = "rgb24"  # stdout: byte layout of the frames
    open_timeout: float = 10.0  # network: seconds to connect
    write_timeout: float = 10.0  # network: seconds a send may block before the receiver counts as gone
    options: dict[str, str] = field(default_factory=dict)  # extra FFmpeg muxer/protocol options


class Sink(ABC):
    """Where anonymized frames go. ``write`` every frame, then ``close`` once."""

    name: str
    network: bool = False  # failures are transient: the runner reopens after a backoff
    required: bool = True  # False: when it closes (SinkClosed) the stream goes on without it
    nominal_fps: float | None = None  # set by the runner from the source before the first write

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None  # (width, height), fixed by the first frame
        self.outputs: list[Path] = []  # finished files, for the summary
        self._resize_warned = False

    def write(self, image: np.ndarray, t: float) -> None:
        """Send one RGB frame whose output time is ``t`` seconds (strictly increasing)."""
        self._write(self._fit(image), t)

    @abstractmethod
    def _write(self, image: np.ndarray, t: float) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Finish the output (flush the encoder, finalise the container); idempotent."""

    def _fit(self, image: np.ndarray) -> np.ndarray:
        # A camera or stream may come back from a reconnect at another size; an output keeps one size.
        height, width = image.shape[:2]
        if self.size is None:
            self.size = (width, height)
            return image
        if (width, height) == self.size:
            return image
        if not self._resize_warned:
            log.warning("%s: source frames changed size to %dx%d; scaling them to %dx%d",
                        self.name, width, height, *self.size)  # fmt: skip
            self._resize_warned = True
        return cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)


# -- encoded outputs ------------------------------------------------------------------------
class _DatagramWriter:
    """File-like object for the MPEG-TS muxer: sends what it is given as UDP datagrams."""

    def __init__(self, host: str, port: int, payload: int) -> None:
        self._address = (host, port)
        self._payload = payload
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)

    def write(self, data) -> int:
        view = memoryview(data)
        for start in range(0, len(view), self._payload):
            try:
                self._socket.sendto(view[start:start + self._payload], self._address)
            except ConnectionRefusedError:
                pass  # ICMP "port unreachable" from an earlier datagram: UDP has no receiver to wait for
            except OSError as exc:
                raise SinkError(f"send failed: {_describe(exc)}") from None
        return len(view)

    def close(self) -> None:
        self._socket.close()


class _StreamWriter:
    """File-like object for the MPEG-TS muxer: sends what it is given over a TCP connection."""

    def __init__(self, host: str, port: int, connect_timeout: float, write_timeout: float) -> None:
        try:
            self._socket = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise SinkError(f"cannot connect: {_describe(exc)}") from None
        self._socket.settimeout(write_timeout)

    def write(self, data) -> int:
        try:
            self._socket.sendall(data)
        except OSError as exc:  # includes timeouts and a receiver that hung up
            raise SinkError(f"send failed: {_describe(exc)}") from None
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()


class EncodedSink(Sink):
    """Encodes frames and muxes them into a file (or segments) or a network stream."""

    def __init__(
        self,
        target: str,
        settings: SinkSettings,
        *,
        kind: str,  # "file", "socket" (udp/tcp) or "push" (an FFmpeg protocol)
        format: str | None = None,
    ) -> None:
        super().__init__()
        self.target = target
        self.name = target
        self.kind = kind
        self.network = kind != "file"
        self.settings = settings
        self.format = format
        self.segment_index = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._writer: _DatagramWriter | _StreamWriter | None = None
        self._stack: contextlib.ExitStack | None = None
        self._current: Path | None = None
        self._start = 0.0  # output time of the first frame of the current file/connection
        self._last_pts = -1
        self.pix_fmt = settings.encode.pix_fmt
        self._written = 0  # files finished (segments, or the one recording)
        # --overwrite of a segmented recording: the earlier run's segments past this run's last
        # one would look like part of it; they go once this run has finished a segment of its own.
        self._stale = (self._existing_segments() if kind == "file" and settings.segment_seconds and settings.overwrite
                       else {})  # fmt: skip

    # -- naming -------------------------------------------------------------------------
    def segment_path(self, index: int) -> Path:
        """Where segment ``index`` goes: ``rec.mp4`` -> ``rec_00000.mp4``, ``rec_00001.mp4``..."""
        path = Path(self.target)
        return path.with_name(f"{path.stem}_{index:05d}{path.suffix}")

    def _existing_segments(self) -> dict[int, Path]:
        """Segments of this name already on disk, by index."""
        path = Path(self.target)
        found = {}
        for candidate in path.absolute().parent.glob(f"{glob.escape(path.stem)}_*{glob.escape(path.suffix)}"):
            index = segment_index(candidate, path)
            if index is not None:
                found[index] = candidate
        return found

    # -- writing ------------------------------------------------------------------------
    def _write(self, image: np.ndarray, t: float) -> None:
        segment = self.settings.segment_seconds
        # (A microsecond's slack: 50 frames of 0.04 s add up to 1.9999999 s, not 2.)
        if self._container is not None and segment and t - self._start >= segment - 1e-6:
            self._finish()
            self.segment_index += 1
        if self._container is None:
            self._open(image, t)
        pts = round((t - self._start) / TIME_BASE)
        pts = max(pts, self._last_pts + 1)  # encoders reject timestamps that do not advance
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format=self.pix_fmt)
        frame.pts, frame.time_base = pts, TIME_BASE
        self._last_pts = pts
        self._mux(self._encode(frame))

    def _encode(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        try:
            return self._stream.encode(frame)
        except (av.FFmpegError, ValueError) as exc:
            raise UserError(f"encoder {self.settings.encode.codec} failed on {self.name}: {_describe(exc)}") from None

    def _mux(self, packets: list[av.Packet]) -> None:
        try:
            self._container.mux(packets)
        except SinkError:
            raise
        except (av.FFmpegError, OSError, ValueError) as exc:
            if self.network:
                raise SinkError(f"send failed: {_describe(exc)}") from None
            raise UserError(f"error writing {self._current}: {_describe(exc)}") from None

    # -- opening ------------------------------------------------------------------------
    def _open(self, image: np.ndarray, t: float) -> None:
        self._start, self._last_pts = t, -1
        try:
            self._container = self._open_container()
            self._stream = self._add_video(image.shape[1], image.shape[0])
            self._start_encoding()
        except BaseException:
            self._abandon()
            raise

    def _start_encoding(self) -> None:
        # Writes the header now: FFmpeg's protocols connect here, so a refusing receiver fails here.
        try:
            self._container.start_encoding()
        except (SinkError, UserError):
            raise
        except av.ProtocolNotFoundError:
            scheme = self.target.split("://", 1)[0]
            raise UserError(f"this FFmpeg build (PyAV {av.__version__}) cannot send {scheme}:// streams") from None
        except (av.FFmpegError, OSError, ValueError) as exc:
            if self.network:
                raise SinkError(f"cannot connect: {_describe(exc)}") from None
            raise UserError(f"cannot start {self._current}: {_describe(exc)}") from None

    def _open_container(self) -> av.container.OutputContainer:
        options = dict(self.settings.options)
        if self.kind == "file":
            path = self.segment_path(self.segment_index) if self.settings.segment_seconds else Path(self.target)
            self._stack = contextlib.ExitStack()
            tmp = self._stack.enter_context(atomic_output(path))
            self._current = path
            if path.suffix.lower() in (".mp4", ".m4v", ".mov", ".3gp"):
                options = {**_FRAGMENTED, **options}
            try:
                return av.open(str(tmp), mode="w", format=self.format, container_options=options)
            except (av.FFmpegError, OSError, ValueError) as exc:
                raise UserError(f"cannot write video to {path}: {_describe(exc)}") from None
        options.setdefault("flush_packets", "1")  # hand every packet to the network at once
        if self.kind == "socket":
            url = urlsplit(self.target)
            host, port = url.hostname or "127.0.0.1", url.port
            if url.scheme == "udp":
                payload = int(parse_qs(url.query).get("pkt_size", [UDP_PAYLOAD])[0])
                self._writer = _DatagramWriter(host, port, payload)
            else:
                self._writer = _StreamWriter(host, port, self.settings.open_timeout, self.settings.write_timeout)
            return av.open(self._writer, mode="w", format="mpegts", container_options=options)
        push = {**_PUSH_OPTIONS.get(urlsplit(self.target).scheme, {}), **options}
        try:
            return av.open(self.target, mode="w", format=self.format, options=push,
                           timeout=(self.settings.open_timeout, self.settings.write_timeout))  # fmt: skip
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"cannot connect: {_describe(exc)}") from None

    def _add_video(self, width: int, height: int) -> av.VideoStream:
        encode = self.settings.encode
        suffix = Path(self.target).suffix if self.kind == "file" else ".ts" if self.kind == "socket" else ""
        name = container_video_encoder(suffix, encode) if self.kind == "file" else encode.codec
        try:
            codec = av.Codec(name, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            raise UserError(f"unknown video encoder '{name}'") from None
        if codec.type != "video":
            raise UserError(f"'{encode.codec}' is not a video encoder")
        self.pix_fmt = choose_pix_fmt(codec, encode.pix_fmt, width, height)
        fps = self.nominal_fps if self.nominal_fps and 1 <= self.nominal_fps <= 240 else 25  # RTSP may claim 90000
        rate = Fraction(fps).limit_denominator(1001)
        stream = self._container.add_stream(codec.name, rate=rate)
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = width, height, self.pix_fmt
        stream.time_base = ctx.time_base = TIME_BASE
        # Keyframes: every second on the network (late joiners), every two in files (fragment length).
        ctx.gop_size = max(1, round(float(rate) * (1 if self.network else 2)))
        options = encoder_options(ctx, encode, suffix)  # the same rules as `streamanon file`
        if codec.name in _X26X:
            options["tune"] = "zerolatency"
        ctx.options = options
        try:
            ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            what = f"{codec.name} ({width}x{height} {self.pix_fmt})"
            raise UserError(f"cannot open encoder {what}: {_describe(exc)}") from None
        return stream

    # -- finishing ----------------------------------------------------------------------
    def _finish(self) -> None:
        """Flush and finalise the current file/connection; a finished file moves into place."""
        if self._container is None:
            return
        try:
            self._mux(self._encode(None))
            try:
                self._container.close()
            except (av.FFmpegError, OSError, ValueError) as exc:
                if self.network:
                    raise SinkError(f"closing failed: {_describe(exc)}") from None
                raise UserError(f"error finishing {self._current}: {_describe(exc)}") from None
        except BaseException:
            self._abandon()
            raise
        self._container = None
        self._close_writer()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()  # atomic_output: rename onto the final name
            self.outputs.append(self._current)
            self._written += 1

    def _abandon(self) -> None:
        """Drop the current container without finishing it (its temporary file is deleted)."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        self._close_writer()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            error = SinkError("abandoned")
            stack.__exit__(SinkError, error, None)

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def reset(self) -> None:
        """Forget a broken connection so that the next write reconnects (network sinks)."""
        self._abandon()

    def close(self) -> None:
        self._finish()
        if self._written and self._stale:
            for index, path in sorted(self._stale.items()):
                if index > self.segment_index:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        log.info("removed %s, a segment of the recording this one replaced", path)
            self._stale = {}


# -- raw frames on stdout -------------------------------------------------------------------
class RawSink(Sink):
    """Raw frames on a pipe (stdout by default): nothing but frame bytes is ever written there."""

    def __init__(
        self, pix_fmt: str = "rgb24", stream: BinaryIO | None = None, announce: Announce | None = None
    ) -> None:
        super().__init__()
        if pix_fmt not in RAW_PIX_FMTS:
            raise UserError(f"raw output must be one of {', '.join(RAW_PIX_FMTS)}, not '{pix_fmt}'")
        self.pix_fmt = pix_fmt
        self.name = "stdout"
        self._stream = stream
        self._announce = announce  # called once with a line describing the frames (for ffplay's flags)
        self._started = False
        self._closed = False

    def _write(self, image: np.ndarray, t: float) -> None:
        if self._closed:
            raise SinkClosed("stdout is closed")
        if not self._started:
            check_raw_format(self.pix_fmt, image.shape[1], image.shape[0])
            self._started = True
            if self._stream is None:
                self._stream = sys.stdout.buffer
            if self._announce is not None:
                rate = f" at {self.nominal_fps:g} fps" if self.nominal_fps else ""
                self._announce(f"raw video on stdout: {image.shape[1]}x{image.shape[0]} {self.pix_fmt}{rate}")
        try:
            self._stream.write(rgb_to_raw(image, self.pix_fmt))
            self._stream.flush()
        except (BrokenPipeError, ValueError) as exc:  # ValueError: the stream object was closed
            self._closed = True
            self._silence()
            raise SinkClosed(f"the reader of stdout went away ({_describe(exc)})") from None

    def _silence(self) -> None:
        # Python flushes stdout at exit; on a broken pipe that prints an error. Point fd 1 at /dev/null.
        if self._stream is sys.stdout.buffer:
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)

    def close(self) -> None:
        if self._stream is not None and not self._closed:
            with contextlib.suppress(BrokenPipeError, ValueError):
                self._stream.flush()
        self._closed = True


# -- preview window -------------------------------------------------------------------------
def display_available() -> bool:
    """Whether a window can be shown: on X11/Wayland systems, DISPLAY or WAYLAND_DISPLAY must be set."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _opencv_has_gui() -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("", "NONE")
    return False


class PreviewSink(Sink):
    """A local window showing the anonymized frames (OpenCV's window, else ``ffplay``).

    Closing the window (or pressing q / Esc in OpenCV's) ends the preview.
    """

    WINDOW = "streamanon preview"

    def __init__(self, required: bool = True) -> None:
        super().__init__()
        if not display_available():
            raise UserError("no display for a preview window (DISPLAY/WAYLAND_DISPLAY is not set)")
        self.required = required
        self.name = "preview"
        self._backend = "opencv" if _opencv_has_gui() else ("ffplay" if shutil.which("ffplay") else None)
        if self._backend is None:
            raise UserError("a preview window needs OpenCV with GUI support (pip install opencv-python) or ffplay")
        self._player: subprocess.Popen | None = None
        self._shown = False

    def _write(self, image: np.ndarray, t: float) -> None:
        if self._backend == "opencv":
            try:
                if self._shown and cv2.getWindowProperty(self.WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                    raise SinkClosed("preview window closed")
                cv2.imshow(self.WINDOW, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                self._shown = True
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    raise SinkClosed("preview closed from the keyboard")
            except cv2.error as exc:
                # A headless build or no usable display: fall back to ffplay when there is one.
                if not shutil.which("ffplay"):
                    raise SinkClosed(f"cannot show a window: {_describe(exc)}") from None
                log.warning("OpenCV cannot show a window (%s); using ffplay", _describe(exc))
                self._backend = "ffplay"
                self._write(image, t)
            return
        if self._player is None:
            height, width = image.shape[:2]
            command = [
                "ffplay", "-loglevel", "error", "-window_title", self.WINDOW, "-fflags", "nobuffer",
                "-f", "rawvideo", "-pixel_format", "rgb24", "-video_size", f"{width}x{height}", "-i", "-",
            ]  # fmt: skip
            self._player = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            self._player.stdin.write(np.ascontiguousarray(image).tobytes())
            self._player.stdin.flush()
        except (BrokenPipeError, OSError):
            raise SinkClosed("preview window closed") from None

    def close(self) -> None:
        if self._backend == "opencv" and self._shown:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.WINDOW)
        if self._player is not None:
            with contextlib.suppress(OSError):
                self._player.stdin.close()
            try:
                self._player.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._player.terminate()
            self._player = None


# -- parsing --------------------------------------------------------------------------------
def segment_index(candidate: Path, recording: Path) -> int | None:
    """The index of ``candidate`` among the segments of ``recording`` (``rec_00042.mp4`` of
    ``rec.mp4``: 42), or None when it is not one (names only; folders are the caller's)."""
    match = re.fullmatch(rf"{re.escape(recording.stem)}_(\d{{5}}){re.escape(recording.suffix)}", candidate.name)
    return int(match.group(1)) if match else None


def _check_payload(text: str) -> None:
    """A UDP output's ``pkt_size``: whole TS packets (188 bytes) that fit a datagram."""
    if not (text.isdigit() and TS_PACKET <= int(text) <= MAX_DATAGRAM):
        raise UserError(f"pkt_size must be a whole number of bytes from {TS_PACKET} to {MAX_DATAGRAM}, got {text!r}")


def open_sink(spec: str, settings: SinkSettings | None = None, announce: Announce | None = None) -> Sink:
    """Build the sink named by ``spec`` and check what can be checked before any frame.

    ``-``: raw frames on stdout; ``preview``: a window; ``udp://host:port``,
    ``tcp://host:port``: MPEG-TS; ``rtsp://``, ``rtmp://``, ``srt://``: pushed to a
    server; anything else: a recording file (``--segment-seconds``: ``NAME_00000.EXT``...).
    """
    settings = settings or SinkSettings()
    if settings.segment_seconds is not None and settings.segment_seconds <= 0:
        raise UserError("--segment-seconds must be positive")
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else None
    if settings.segment_seconds is not None and (spec in ("-", "preview") or scheme not in (None, "file")):
        raise UserError("--segment-seconds applies to recording files only")
    if spec == "-":
        if settings.options:
            raise UserError("--sink-option does not apply to raw stdout")
        return RawSink(settings.raw_pix_fmt, announce=announce)
    if spec == "preview":
        return PreviewSink(required=True)
    if scheme in ("udp", "tcp"):
        url = urlsplit(spec)
        if not url.port:
            raise UserError(f"{spec} needs a port, e.g. {scheme}://127.0.0.1:5000")
        if scheme == "tcp" and "listen" in parse_qs(url.query, keep_blank_values=True):  # ?listen, ?listen=1
            raise UserError("a tcp:// output connects to a listening receiver; let the receiver listen "
                            "(e.g. ffplay 'tcp://127.0.0.1:5000?listen') instead of ?listen here")  # fmt: skip
        if scheme == "udp":
            _check_payload(parse_qs(url.query).get("pkt_size", [str(UDP_PAYLOAD)])[0])
        return EncodedSink(spec, settings, kind="socket", format="mpegts")
    if scheme in _PUSH_FORMATS:
        return EncodedSink(spec, settings, kind="push", format=_PUSH_FORMATS[scheme])
    if scheme not in (None, "file"):
        raise UserError(f"unknown output '{spec}': use -, preview, a file name, or udp://, tcp://, "
                        f"{', '.join(s + '://' for s in sorted(_PUSH_FORMATS))}")  # fmt: skip
    path = local_path(spec)
    _check_recording(path, settings)
    return EncodedSink(str(path), settings, kind="file")


def _check_recording(path: Path, settings: SinkSettings) -> None:
    if not is_video_path(path):
        raise UserError(
            f"unknown output extension '{path.suffix or path.name}' (use one of {', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    if path.is_dir():
        raise UserError(f"output is a folder, give an output file name: {path}")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UserError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"output folder is not writable: {parent}")
    if settings.overwrite:
        return
    if settings.segment_seconds:
        candidates = parent.glob(f"{glob.escape(path.stem)}_*{glob.escape(path.suffix)}")
        existing = sorted(c for c in candidates if segment_index(c, path) is not None)
        if existing:
            raise UserError(f"output segments exist, e.g. {existing[0]} (use --overwrite to replace them)")
    elif path.exists() or path.is_symlink():
        raise UserError(f"output exists: {path} (use --overwrite to replace it)")

