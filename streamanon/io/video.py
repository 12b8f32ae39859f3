"""Video files with PyAV: decode to RGB frames, re-encode them, copy every other stream.

Design
------
Three pieces, each with one job:

* :class:`VideoReader` opens the input once. Iterating it yields
  :class:`~streamanon.types.Frame` records (RGB ``uint8``, index, pts, time base);
  :meth:`VideoReader.demux` yields the same frames *and* the raw packets of every
  other stream, in file order, so a single pass over the input feeds both the
  pipeline and the passthrough streams.
* :class:`VideoWriter` is the only way video is written. It takes the reader as a
  template (size, rate, time base, colour tags, rotation, other streams), encodes
  the images given to :meth:`VideoWriter.write` and copies packets given to
  :meth:`VideoWriter.mux_passthrough` bit-exact. It writes through
  :func:`~streamanon.io.paths.atomic_output`: the file appears at its destination
  only when the writer is closed without an error. The pipeline can batch frames
  freely between reading and writing: the muxer interleaves packets by time, and
  each frame carries its own pts.
* :func:`transcode` is the loop joining the two around a per-frame ``process``.

Guarantees and choices
----------------------
* **Timing.** The output video stream uses the source time base and each frame keeps
  its source pts, so variable frame rate, start offsets and A/V sync survive. (A
  container with a coarser clock, e.g. Matroska's milliseconds, rounds them.) A frame
  without pts, or with one not after its predecessor's, gets the previous pts plus one
  nominal frame (or one tick), because encoders reject non-increasing timestamps.
* **Frames as coded.** Frames are *not* rotated on decode. :attr:`VideoReader.rotation`
  says how players turn them, and the writer copies the display matrix so the output
  turns the same way. :func:`to_display` / :func:`from_display` rotate an image into the
  upright view and back, e.g. for a detector that needs upright faces.
* **Colour.** Decoding and encoding use the source's colour matrix and range, and the
  output is tagged with the source's colour properties, so an unchanged frame comes
  back with the same colours.
* **Odd sizes.** libx264 cannot encode 4:2:0 or 4:2:2 at an odd width/height. Rather than
  pad or crop (which changes the frame size), the writer falls back to ``yuv444p``
  (or the encoder's first full-chroma format) and logs a warning: exact size kept, at
  the cost of players without H.264 4:4:4 support (browsers, QuickTime).
* **Other streams.** Audio, subtitle, data and attachment streams are copied packet by
  packet, never re-encoded. A stream that the output container cannot hold is an error
  naming the stream and suggesting ``.mkv``; it is never dropped silently. Extra *video*
  streams (a second camera angle, cover art) are not copied, and say so in a warning and
  in :attr:`TranscodeResult.dropped_streams`: they may show faces this tool never saw.
* **Container metadata** (title, creation time, GPS location tags) is not copied: it can
  identify the people or the place that were just anonymized. Stream language, title
  and disposition are kept.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import logging
import math
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from ..config import EncodeConfig
from ..errors import UserError
from ..types import Frame, FrameStats
from .background import WriteBehind, read_ahead
from .images import is_image_path
from .paths import atomic_output, check_paths

log = logging.getLogger(__name__)

__all__ = [
    "ProcessedFrame",
    "choose_pix_fmt",
    "TranscodeResult",
    "VideoReader",
    "VideoWriter",
    "from_display",
    "to_display",
    "transcode",
]

# SVT-AV1 prints its banner and settings to stderr itself (not through FFmpeg's log): errors only.
os.environ.setdefault("SVT_LOG", "1")
_DISPLAYMATRIX = av.sidedata.sidedata.Type.DISPLAYMATRIX
_COLOR_RANGE_JPEG = 2  # AVCOL_RANGE_JPEG: full range
# Containers that store one time per packet and shift every timestamp by a B-frame's reorder delay
# (or, MXF, stamp them out of order): encoded without B-frames, every source timestamp survives.
# Not AVI and ASF: FFmpeg reads H.264 without B-frames from them one frame late, and with them the
# reader restores the stored times (see VideoReader._timestamps_in_decode_order).
_NO_B_FRAME_CONTAINERS = frozenset({".ts", ".mts", ".m2ts", ".flv", ".nut", ".mxf", ".mpg", ".mpeg"})
_X26X_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip
# The video encoder of containers that cannot hold the default H.264 (WebM: VP8/VP9/AV1 only; Ogg:
# Theora/VP8, and this FFmpeg has no Theora).
_CONTAINER_VIDEO_ENCODERS = {".webm": "libvpx-vp9", ".ogv": "libvpx"}
# libvpx's cpu-used (0 slowest .. 8 fastest) for each x264 preset name.
_VPX_CPU_USED = dict(zip(_X26X_PRESETS, (8, 7, 6, 5, 4, 3, 2, 1, 0, 0)))
# Pixel formats tried, in order, when the requested one cannot hold an odd frame size.
_FULL_CHROMA_FALLBACKS = ("yuv444p", "yuvj444p", "gbrp", "rgb24", "bgr0")
# Stream metadata worth keeping; everything else (and container metadata) may identify people.
_KEPT_STREAM_TAGS = ("language", "title", "timecode")
_COMMON_VIDEO_ENCODERS = (
    "libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1", "mpeg4", "h264_nvenc", "hevc_nvenc",
)  # fmt: skip


_WARNED_ROTATION: set[Path] = set()  # inputs already warned about a rotation that is no quarter turn


def _describe(exc: BaseException) -> str:
    # FFmpeg errors carry "[Errno -1094995529] ... 'path'"; the strerror part is the useful bit.
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return " ".join(text.split())  # one line, whatever FFmpeg put in the message


def _local_url(path: str | Path) -> str:
    """``path`` as FFmpeg must be given a local file: absolute.

    FFmpeg reads the text before a colon as a protocol, so a relative ``clip:1.mp4`` fails with
    "Protocol not found" (and ``http:x.mp4`` would even be fetched). An absolute path starts with
    ``/`` (or a drive letter, which FFmpeg knows), which no protocol name can contain. Only local
    files come here; URLs go to :mod:`streamanon.live`, which opens them itself.
    """
    return str(Path(path).absolute())


def _normalize_degrees(degrees: float) -> int:
    value = int(round(degrees)) % 360
    return value - 360 if value > 180 else value


def nearest_quarter_turn(degrees: float) -> int:
    """``degrees`` rounded to the multiple of 90 that :func:`to_display` turns by, in (-180, 180]."""
    return _normalize_degrees(_quarter_turns(degrees) * 90)


def rotate_tag_degrees(stream: av.VideoStream) -> int:
    """A legacy ``rotate`` tag (clockwise degrees) in PyAV's counter-clockwise sense; 0 without one."""
    tag = stream.metadata.get("rotate")
    try:
        return _normalize_degrees(-float(tag)) if tag else 0
    except ValueError:
        return 0


class VideoReader:
    """Decode the main video stream of a file into RGB :class:`Frame` records.

    Use as a context manager. Raises :class:`UserError` when the file cannot be
    opened or has no video stream. Frames are yielded as coded (see :attr:`rotation`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._container = av.open(_local_url(self.path), mode="r")
        except FileNotFoundError:
            raise UserError(f"input not found: {self.path}") from None
        except IsADirectoryError:
            raise UserError(f"input is a folder, not a video file: {self.path}") from None
        except PermissionError:
            raise UserError(f"input is not readable (permission denied): {self.path}") from None
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise UserError(f"cannot read {self.path} as a video: {_describe(exc)}") from None
        try:
            self._stream = self._pick_video_stream()
        except BaseException:
            self._container.close()
            raise
        # Slice threads only: frame threads drop the frames still in flight, without an error, when
        # a packet is damaged (the last frames of a cut-off recording: 19 of 21 decodable ones in an
        # audit). Decoding stays the cheap part (1080p H.264 ~5 ms a frame with RGB conversion).
        self._stream.thread_type = "SLICE"
        # The stream's size as it starts: the output's. The codec context follows the decoder,
        # which may be ahead of the frames handed out, so it is read once, here.
        self._size = (int(self._stream.codec_context.width), int(self._stream.codec_context.height))
        self._resized_from: set[tuple[int, int]] = set()  # other frame sizes met (warned once each)
        self._probed = False
        self._display_matrix: tuple[int, ...] | None = None
        self._rotation = 0
        self._started = False
        self.decode_errors = 0  # damaged video packets skipped so far

    def _pick_video_stream(self) -> av.VideoStream:
        cover_art = av.stream.Disposition.attached_pic
        candidates = [s for s in self._container.streams.video if not s.disposition & cover_art]
        if not candidates:
            raise UserError(f"{self.path} has no video stream")
        try:
            best = self._container.streams.best("video")
        except (ValueError, av.FFmpegError):
            best = None
        return best if best in candidates else candidates[0]

    # -- context manager -------------------------------------------------------------
    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release the input file."""
        self._container.close()

    # -- properties ----------------------------------------------------------------
    @property
    def container(self) -> av.container.InputContainer:
        """The PyAV input container (for the writer's passthrough streams)."""
        return self._container

    @property
    def stream(self) -> av.VideoStream:
        """The decoded video stream."""
        return self._stream

    @property
    def width(self) -> int:
        """Frame width as the stream starts; every frame is handed out at this size."""
        return self._size[0]

    @property
    def height(self) -> int:
        """Frame height as the stream starts; every frame is handed out at this size."""
        return self._size[1]

    @property
    def fps(self) -> Fraction | None:
        """Average frame rate; falls back to FFmpeg's guessed and base rates, None if none is known."""
        for rate in (self._stream.average_rate, self._stream.guessed_rate, self._stream.base_rate):
            if rate:
                return Fraction(rate)
        return None

    @property
    def time_base(self) -> Fraction:
        """Unit of :attr:`Frame.pts` for this stream."""
        return Fraction(self._stream.time_base)

    @property
    def frame_count(self) -> int | None:
        """Number of frames the container states, or None when it does not say (e.g. MPEG-PS)."""
        return int(self._stream.frames) or None

    @property
    def estimated_frame_count(self) -> int | None:
        """:attr:`frame_count`, or duration x fps when the container does not state it (for progress bars)."""
        if self.frame_count is not None:
            return self.frame_count
        if self.duration is not None and self.fps:
            # Containers often leave out the last frame's duration: round up.
            return max(1, math.ceil(self.duration * self.fps - 1e-6))
        return None

    @property
    def duration(self) -> float | None:
        """Duration of the video stream in seconds (the container's if the stream has none)."""
        if self._stream.duration:
            return float(self._stream.duration * self._stream.time_base)
        if self._container.duration:
            return self._container.duration / av.time_base
        return None

    @property
    def has_audio(self) -> bool:
        return bool(self._container.streams.audio)

    @property
    def rotation(self) -> int:
        """Degrees counter-clockwise that players rotate the frames by, in (-180, 180].

        Read from the stream's display matrix (how FFmpeg >= 7 exposes MP4/MOV rotation;
        PyAV attaches it to decoded frames) or, failing that, a legacy ``rotate`` tag
        (which counts clockwise). Same sign as ``VideoFrame.rotation`` and
        ``VideoStream.set_display_rotation`` in PyAV; a phone's portrait clip reads -90.
        """
        self._probe()
        return self._rotation

    @property
    def display_matrix(self) -> tuple[int, ...] | None:
        """The stream's 3x3 display matrix (9 ints, FFmpeg layout), or None when it has none."""
        self._probe()
        return self._display_matrix

    def _probe(self) -> None:
        # Only a decoded frame exposes the display matrix in PyAV 18 (it has no
        # accessor for the stream's coded side data), so decode the first frame from
        # a second handle and leave this one's read position untouched.
        if self._probed:
            return
        self._probed = True
        try:
            with av.open(_local_url(self.path)) as probe:
                stream = probe.streams[self._stream.index]
                for frame in probe.decode(stream):
                    for side_data in frame.side_data:
                        if side_data.type == _DISPLAYMATRIX:
                            self._display_matrix = tuple(int(v) for v in np.frombuffer(bytes(side_data), "<i4")[:9])
                            self._rotation = _normalize_degrees(frame.rotation)
                    break
        except (av.FFmpegError, OSError, ValueError) as exc:
            log.debug("rotation probe of %s failed: %s", self.path, exc)
        if self._display_matrix is None:
            self._rotation = rotate_tag_degrees(self._stream)
        if self._rotation % 90 and self.path not in _WARNED_ROTATION:
            _WARNED_ROTATION.add(self.path)  # once per file, however often it is opened
            log.warning(
                "%s: players rotate this video by %d degrees, not a multiple of 90; it is turned by the "
                "nearest quarter turn (%d degrees) for face detection, so faces may look tilted by up to 45 "
                "degrees to the detector; the output keeps the input's exact rotation",
                self.path, self._rotation, nearest_quarter_turn(self._rotation),
            )  # fmt: skip

    # -- decoding -------------------------------------------------------------------
    def _frame(self, decoded: av.VideoFrame, index: int, pts: int | None = None) -> Frame:
        if not all(self._size):  # a container that leaves the size to the first frame
            self._size = (decoded.width, decoded.height)
        size = None
        if (decoded.width, decoded.height) != self._size:
            # A size change mid-stream (a camera switching resolution, clips joined): scaled to the
            # size the stream started with, as ffmpeg does, since the output has one size.
            size = self._size
            if (decoded.width, decoded.height) not in self._resized_from:
                self._resized_from.add((decoded.width, decoded.height))
                log.warning("%s: frame %d is %dx%d, the video started at %dx%d; scaled to that size", self.path,
                            index, decoded.width, decoded.height, *self._size)  # fmt: skip
        image = decoded_to_rgb(decoded, size)
        if pts is None:
            pts = decoded.pts if decoded.pts is not None else decoded.dts
        return Frame(image=image, index=index, pts=pts, time_base=self.time_base)

    def _claim(self) -> None:
        if self._started:
            raise RuntimeError("a VideoReader can be iterated once; open the file again to re-read it")
        self._started = True

    def __iter__(self) -> Iterator[Frame]:
        """Yield every frame of the video stream in presentation order."""
        for item in self._iter(demux_all=False):
            yield item  # type: ignore[misc]

    def demux(self) -> Iterator[Frame | av.Packet]:
        """Yield decoded frames of the video stream and raw packets of every other stream, in file order.

        Flush packets (empty, without timestamps) are not yielded. Packets of other
        *video* streams are yielded too; :class:`VideoWriter` ignores the ones it dropped.
        """
        return self._iter(demux_all=True)

    def _timestamps_in_decode_order(self, packets: int = 48) -> bool:
        """Whether the container stamps video packets in decode order although frames are reordered.

        AVI, ASF and MXF cannot say when a frame is shown: they time packets as stored, and FFmpeg
        guesses pts from that, so H.264/MPEG-4 with B-frames decodes to frames whose pts jump back
        and forth. Checked on the first ``packets`` packets from a second handle, and only true when
        all three hold: the decoder reorders, packet pts rise strictly in decode order (never so in
        a correctly stamped B-frame stream) and the decoded frames' pts do not. A file for which
        this is true would have wrong output timing otherwise; every other file is left alone.
        """
        if not self._stream.codec_context.has_b_frames:
            return False
        try:
            with av.open(_local_url(self.path)) as probe:
                stream = probe.streams[self._stream.index]
                fed: list[int] = []
                shown: list[int] = []
                for packet in probe.demux(stream):
                    if packet.size:
                        if packet.pts is None or packet.dts is None or (fed and packet.pts <= fed[-1]):
                            return False
                        fed.append(packet.pts)
                    shown += [f.pts for f in packet.decode() if f.pts is not None]
                    if len(fed) >= packets:
                        break
        except (av.FFmpegError, OSError, ValueError) as exc:
            log.debug("timestamp probe of %s failed: %s", self.path, exc)
            return False
        return any(b < a for a, b in zip(shown, shown[1:]))

    def _iter(self, demux_all: bool) -> Iterator[Frame | av.Packet]:
        self._claim()
        index = 0
        # Decode-order timestamps (see _timestamps_in_decode_order): the decoder gives frames in
        # presentation order, so the n-th frame out is shown at the smallest timestamp of the
        # packets fed so far that no earlier frame took. That is the packets' dts, the time the
        # container stored (their pts is FFmpeg's guess, dts plus the reorder delay).
        reorder: list[int] | None = [] if self._timestamps_in_decode_order() else None
        if reorder is not None:
            log.info("%s: video timestamps are in decode order; reordering them", self.path)
        streams = () if demux_all else (self._stream,)
        try:
            for packet in self._container.demux(*streams):
                if packet.stream.index == self._stream.index:
                    if reorder is not None and packet.size and packet.dts is not None:
                        heapq.heappush(reorder, packet.dts)
                    try:
                        decoded_frames = packet.decode()
                    except av.InvalidDataError as exc:
                        # Like ffmpeg: skip a damaged packet (e.g. a truncated recording)
                        # instead of losing the whole file; the frame is simply absent.
                        self.decode_errors += 1
                        log.warning(
                            "%s: skipped a damaged video packet after frame %d (%s)", self.path, index, _describe(exc)
                        )
                        continue
                    for decoded in decoded_frames:
                        yield self._frame(decoded, index, heapq.heappop(reorder) if reorder else None)
                        index += 1
                elif packet.size or packet.dts is not None or packet.pts is not None:
                    yield packet
        except av.FFmpegError as exc:
            raise UserError(f"cannot read {self.path} after frame {index}: {_describe(exc)}") from None
        if index == 0:
            raise UserError(f"no video frame of {self.path} could be decoded")
        declared = self.frame_count
        if declared is not None and index < declared and self.decode_errors:
            # Only with damaged packets: a healthy file may declare more frames than it shows (AVI
            # counts the empty entries that fill gaps, MP4 edit lists cut frames from the start).
            log.warning("%s: %d of the %d frames the file declares could be decoded (it is damaged or cut "
                        "short); the output has those %d", self.path, index, declared, index)  # fmt: skip


@dataclass
class ProcessedFrame:
    """What a ``process`` callback may return instead of a bare image: the image and its stats."""

    image: np.ndarray
    stats: FrameStats | None = None


@dataclass(frozen=True)
class TranscodeResult:
    """Summary of one :func:`transcode` run."""

    frames: int  # video frames decoded, processed and encoded
    seconds: float  # wall-clock time of the whole run
    input: Path
    output: Path
    copied_streams: int  # streams copied bit-exact (audio, subtitles, data, attachments)
    dropped_streams: tuple[str, ...] = ()  # streams not copied: extra video, or unsupported when allowed
    codec: str = ""
    pix_fmt: str = ""  # pixel format actually encoded (differs from the request for odd sizes)

    @property
    def fps(self) -> float:
        """Processing speed in frames per second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def container_video_encoder(suffix: str, encode: EncodeConfig) -> str:
    """The encoder for a ``suffix`` file: ``encode.codec``, or the container's own when that is the
    default H.264 and the container cannot hold it (WebM: VP9, Ogg: VP8), so a folder of mixed
    recordings needs no --codec per file."""
    own = _CONTAINER_VIDEO_ENCODERS.get(suffix.lower())
    if own is None or encode.codec != EncodeConfig.codec or own not in av.codecs_available:
        return encode.codec
    log.warning("a %s file cannot hold H.264 video; encoding %s instead (--codec chooses)", suffix, own)
    return own


def encoder_options(ctx: av.CodecContext, encode: EncodeConfig, suffix: str) -> dict[str, str]:
    """The private options for encoder ``ctx`` writing a ``suffix`` file: crf and preset where the
    encoder has them (presets of other names only when given), libvpx's speed and constant quality,
    no B-frames where the container cannot time them, x265 quiet."""
    private = {option.name for option in ctx.supported_options.private}
    options: dict[str, str] = {}
    if suffix.lower() in _NO_B_FRAME_CONTAINERS:
        options["bf"] = "0"  # the container cannot store a reordered frame's time (see the set)
    default = EncodeConfig()
    if "crf" in private:
        options["crf"] = str(encode.crf)
        if ctx.name == "libvpx-vp9":
            options["b"] = "0"  # constant quality: libvpx caps the bitrate unless told not to
        elif ctx.name == "libvpx":
            options["b"] = "100M"  # VP8 has no pure constant quality: crf under a ceiling never met
    else:
        # A warning only for a crf the user chose: the default is not a promise.
        (log.info if encode.crf == default.crf else log.warning)(
            "encoder %s has no crf option; crf=%s ignored", ctx.name, encode.crf
        )
    x26x = ctx.name in ("libx264", "libx264rgb", "libx265")
    if x26x and encode.preset not in _X26X_PRESETS:
        raise UserError(
            f"unknown preset '{encode.preset}' for {ctx.name} (choose from {', '.join(_X26X_PRESETS)})"
        )
    if "cpu-used" in private and encode.preset in _X26X_PRESETS:
        # libvpx's speed knob, from the x264-style preset (its own default is slow: cpu-used 1).
        options["cpu-used"] = str(_VPX_CPU_USED[encode.preset])
        if "row-mt" in private:
            options["row-mt"] = "1"
    elif "preset" in private and (x26x or encode.preset != default.preset):
        # Other encoders' presets (SVT-AV1: 0-13, NVENC: p1-p7) have other names: the x264 default
        # would be refused, so they keep their own unless one is given.
        options["preset"] = encode.preset
    if ctx.name == "libx265":
        options["x265-params"] = "log-level=error"  # x265 prints its settings to stderr otherwise
    return options


def decoded_to_rgb(decoded: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """A decoded frame as RGB ``uint8`` ``(H, W, 3)``, scaled to ``size`` (width, height) if given.

    swscale's default conversion, as ``ffmpeg -pix_fmt rgb24`` does it. It rounds luma down: a
    frame encoded again comes out ~1 level darker in its untouched pixels. Accurate rounding with
    full chroma interpolation would keep luma exact, but CenterFace then found fewer faces (street
    clip 916 against 931; 1143 against 1154 faces in 300 photos at a fifth of 720p), and finding
    faces comes first.
    """
    options: dict = {"format": "rgb24"}
    if size is not None:
        options["width"], options["height"] = size
    if decoded.color_range == _COLOR_RANGE_JPEG:
        # swscale treats untagged YUV as limited range; full-range input must say so.
        options["src_color_range"] = _COLOR_RANGE_JPEG
    return decoded.reformat(**options).to_ndarray()


def _video_encoder(name: str) -> av.Codec:
    try:
        codec = av.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        codec = None
    if codec is None or codec.type != "video":
        known = [c for c in _COMMON_VIDEO_ENCODERS if c in av.codecs_available]
        available = ", ".join(known) or "none of the common ones"
        raise UserError(f"unknown video encoder '{name}' (available here: {available})")
    return codec


def _subsampled(pix_fmt: str) -> tuple[bool, bool]:
    """Whether the format's chroma is halved horizontally, vertically."""
    planes = av.VideoFormat(pix_fmt, 2, 2).components
    return any(c.width < 2 for c in planes), any(c.height < 2 for c in planes)


def choose_pix_fmt(codec: av.Codec, requested: str, width: int, height: int) -> str:
    """The pixel format to encode ``width`` x ``height`` with: ``requested``, or a full-chroma one for odd sizes."""
    try:
        halve_w, halve_h = _subsampled(requested)
    except (ValueError, av.FFmpegError):
        raise UserError(f"unknown pixel format '{requested}'") from None
    supported = [f.name for f in (codec.video_formats or [])]
    if supported and requested not in supported:
        raise UserError(
            f"encoder {codec.name} cannot encode pix_fmt '{requested}' (it supports: {', '.join(supported)})"
        )
    if not ((halve_w and width % 2) or (halve_h and height % 2)):
        return requested
    for fallback in _FULL_CHROMA_FALLBACKS:
        if not supported or fallback in supported:
            log.warning(
                "frame size %dx%d is odd, which %s cannot hold; encoding %s to keep the exact size "
                "(some players, e.g. browsers and QuickTime, cannot play it)",
                width, height, requested, fallback,
            )  # fmt: skip
            return fallback
    raise UserError(
        f"encoder {codec.name} cannot encode the odd frame size {width}x{height}; use another codec, e.g. libx264"
    )


def _stream_label(stream: av.stream.Stream) -> str:
    codec = stream.codec_context.name if stream.codec_context is not None else "no codec"
    return f"stream #{stream.index} ({stream.type}, {codec})"


def _matroska_holds(stream: av.stream.Stream) -> bool:
    """Whether a Matroska file could take ``stream`` as-is (to suggest .mkv only when it helps)."""
    try:
        with av.open(io.BytesIO(), mode="w", format="matroska") as probe:
            probe.add_stream_from_template(stream)
    except (ValueError, av.FFmpegError):
        return False
    return True


def _container_options(path: Path) -> dict[str, str]:
    if path.suffix.lower() in (".mp4", ".m4v", ".mov", ".3gp"):
        # Index at the front: players can start before the whole file has arrived.
        return {"movflags": "+faststart"}
    return {}


class VideoWriter:
    """Encode RGB frames and copy passthrough packets into ``dst``, atomically.

    ``template`` supplies size, frame rate, time base, colour tags, rotation and the
    streams to copy. Use as a context manager: on a clean exit the encoder is flushed
    and the file moved onto ``dst``; on an exception nothing is left at ``dst``. The
    caller checks paths first (:func:`~streamanon.io.paths.check_paths`).

    A stream the output cannot hold raises :class:`UserError` at construction, before
    any frame is decoded, unless ``drop_unsupported`` is set: then it is left out with
    a warning and listed in :attr:`dropped_streams`.
    """

    def __init__(
        self,
        dst: str | Path,
        template: VideoReader,
        encode: EncodeConfig | None = None,
        drop_unsupported: bool = False,
    ) -> None:
        self.path = Path(dst)
        self.encode = encode or EncodeConfig()
        self.drop_unsupported = drop_unsupported
        self._template = template
        self._frames = 0
        self._last_pts: int | None = None
        self._closed = False
        self._container: av.container.OutputContainer | None = None
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_output(self.path))
        try:
            try:
                self._container = av.open(
                    _local_url(tmp), mode="w", container_options=_container_options(self.path)
                )
            except (av.FFmpegError, ValueError, OSError) as exc:
                raise UserError(f"cannot write video to {self.path}: {_describe(exc)}") from None
            self._setup(template)
        except BaseException as exc:
            self._discard(exc)  # removes the temporary file
            raise

    # -- setup ---------------------------------------------------------------------
    def _setup(self, template: VideoReader) -> None:
        self._out_streams: dict[int, av.stream.Stream] = {}
        self.dropped_streams: list[str] = []
        for stream in template.container.streams:
            if stream.index == template.stream.index:
                self._out_streams[stream.index] = self._add_video(template)
            elif stream.type == "video":
                what = _stream_label(stream)
                log.warning("not copying %s: a video stream this tool does not anonymize", what)
                self.dropped_streams.append(what)
            elif stream.codec_context is None and "timecode" in stream.metadata:
                # A QuickTime timecode track: FFmpeg cannot copy its packets, but the
                # video stream's 'timecode' tag (kept) makes the muxer write it again.
                log.debug("timecode track #%d carried by the video stream's timecode tag", stream.index)
            elif stream.codec_context is None:
                self._unsupported(stream, "FFmpeg knows no codec for it, so no container can hold it as-is")
            else:
                out = self._add_copy(stream)
                if out is not None:
                    self._out_streams[stream.index] = out
        try:
            # Write the header now: a container refusing a stream fails before any decoding.
            self._container.start_encoding()
        except (av.FFmpegError, ValueError) as exc:
            # Name what goes in: the encoder for the video, the input's codec for the copied streams.
            held = ", ".join(
                f"{out.codec_context.name} video" if s.index == template.stream.index else _stream_label(s)
                for s in template.container.streams if (out := self._out_streams.get(s.index)) is not None
            )  # fmt: skip
            raise UserError(
                f"cannot start a {self.path.suffix} file holding {held}: {_describe(exc)}{self._mkv_hint()}"
            ) from None

    def _mkv_hint(self) -> str:
        return "" if self.path.suffix.lower() == ".mkv" else "; .mkv holds more kinds of streams"

    def _unsupported(self, stream: av.stream.Stream, reason: str) -> None:
        what = _stream_label(stream)
        if self.drop_unsupported:
            log.warning("not copying %s: %s", what, reason)
            self.dropped_streams.append(what)
            return
        raise UserError(
            f"cannot copy {what} of the input: {reason} (or pass --drop-unsupported-streams to leave it out)"
        )

    def _add_video(self, template: VideoReader) -> av.VideoStream:
        encode = self.encode
        codec = _video_encoder(encode.codec)
        width, height = template.width, template.height
        self.pix_fmt = choose_pix_fmt(codec, encode.pix_fmt, width, height)
        self._nominal_rate = template.fps or Fraction(25)
        own = container_video_encoder(self.path.suffix, encode)
        if own != codec.name:
            codec = _video_encoder(own)
            self.pix_fmt = choose_pix_fmt(codec, encode.pix_fmt, width, height)
        try:
            stream = self._container.add_stream(codec.name, rate=self._nominal_rate)
        except ValueError as exc:
            # .mkv holds nearly every codec; suggesting .mp4 to someone already writing .mp4 helps no one.
            raise UserError(
                f"a {self.path.suffix} file cannot hold {codec.name} video ({_describe(exc)}); "
                f"write a .mkv file or choose another --codec"
            ) from None
        ctx = stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = width, height, self.pix_fmt
        # The source time base keeps every source pts representable (VFR survives).
        stream.time_base = template.time_base
        ctx.time_base = template.time_base
        src = template.stream.codec_context
        if src.sample_aspect_ratio:
            ctx.sample_aspect_ratio = src.sample_aspect_ratio
        self._colorspace = src.colorspace
        self._color_range = src.color_range
        for name in ("colorspace", "color_range", "color_primaries", "color_trc"):
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                setattr(ctx, name, getattr(src, name))
        self.encoder_options = encoder_options(ctx, encode, self.path.suffix)  # what was asked (for -v)
        ctx.options = dict(self.encoder_options)
        try:
            ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            raise UserError(
                f"cannot open encoder {codec.name} (crf={encode.crf}, preset={encode.preset}, "
                f"pix_fmt={self.pix_fmt}, {width}x{height}): {_describe(exc)}"
            ) from None
        if template.display_matrix is not None:
            stream.set_display_matrix(template.display_matrix)
        elif template.rotation:
            stream.set_display_rotation(template.rotation)
        for key in _KEPT_STREAM_TAGS:
            if key in template.stream.metadata:
                stream.metadata[key] = template.stream.metadata[key]
        if "timecode" not in stream.metadata:
            # Some files carry the timecode only on their timecode data track.
            for other in template.container.streams:
                if other.type == "data" and "timecode" in other.metadata:
                    stream.metadata["timecode"] = other.metadata["timecode"]
                    break
        return stream

    def _add_copy(self, stream: av.stream.Stream) -> av.stream.Stream | None:
        try:
            out = self._container.add_stream_from_template(stream)
        except (ValueError, av.FFmpegError) as exc:
            if self.path.suffix.lower() != ".mkv" and _matroska_holds(stream):
                reason = f"a {self.path.suffix} file cannot hold it; use an output extension that can, e.g. .mkv"
            else:
                reason = f"a {self.path.suffix} file cannot hold it ({_describe(exc)})"
            self._unsupported(stream, reason)
            return None
        for key in _KEPT_STREAM_TAGS:
            if key in stream.metadata:
                out.metadata[key] = stream.metadata[key]
        with contextlib.suppress(AttributeError, ValueError, TypeError):
            out.disposition = stream.disposition
        return out

    # -- writing -------------------------------------------------------------------
    @property
    def frames_written(self) -> int:
        return self._frames

    @property
    def video_stream(self) -> av.VideoStream:
        """The encoded (anonymized) video stream of the output."""
        return self._out_streams[self._template.stream.index]

    @property
    def copied_streams(self) -> int:
        """Streams copied bit-exact (every output stream but the encoded video)."""
        return len(self._out_streams) - 1

    def _next_pts(self, frame: Frame) -> int:
        tb = self._template.time_base
        pts = frame.pts
        if pts is not None and frame.time_base is not None and frame.time_base != tb:
            pts = round(pts * frame.time_base / tb)
        if self._last_pts is None:
            return pts if pts is not None else 0
        if pts is None:
            pts = self._last_pts + max(1, round(1 / (self._nominal_rate * tb)))
        elif pts <= self._last_pts:
            log.debug("frame %d: pts %s not after %s; using %s", frame.index, pts, self._last_pts, self._last_pts + 1)
            pts = self._last_pts + 1
        return pts

    def write(self, frame: Frame, image: np.ndarray) -> None:
        """Encode ``image`` (RGB ``uint8``, the template's size) at ``frame``'s timestamp."""
        self._check_open()
        expected = (self._template.height, self._template.width, 3)
        if image.dtype != np.uint8 or image.shape != expected:
            raise ValueError(
                f"frame {frame.index}: expected an RGB uint8 image of shape {expected}, got {image.dtype} {image.shape}"
            )
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        options: dict = {"format": self.pix_fmt}
        if self._colorspace not in (None, 2):  # 2 = unspecified: swscale's BT.601 default, as on decode
            options["dst_colorspace"] = self._colorspace
        if self._color_range == _COLOR_RANGE_JPEG:
            options["dst_color_range"] = _COLOR_RANGE_JPEG
        video = video.reformat(**options)
        pts = self._next_pts(frame)
        video.pts = pts
        video.time_base = self._template.time_base
        self._last_pts = pts
        self._mux(self._encode(video))
        self._frames += 1

    def _encode(self, video: av.VideoFrame | None) -> list[av.Packet]:
        try:
            return self._out_streams[self._template.stream.index].encode(video)
        except (av.FFmpegError, ValueError) as exc:
            raise UserError(f"encoder {self.encode.codec} failed on {self.path}: {_describe(exc)}") from None

    def mux_passthrough(self, packet: av.Packet) -> None:
        """Copy one demuxed packet of a non-video stream (from :meth:`VideoReader.demux`) unchanged."""
        self._check_open()
        out = self._out_streams.get(packet.stream.index)
        if out is None or packet.stream.index == self._template.stream.index:
            return  # a dropped stream (see dropped_streams)
        packet.stream = out
        self._mux(packet)

    def _mux(self, packets: av.Packet | list[av.Packet]) -> None:
        try:
            self._container.mux(packets)
        except (av.FFmpegError, ValueError) as exc:
            raise UserError(f"error writing {self.path}: {_describe(exc)}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("VideoWriter is closed")

    # -- finishing -----------------------------------------------------------------
    def close(self) -> None:
        """Flush the encoder, finish the file and move it onto the destination."""
        if self._closed:
            return
        try:
            self._mux(self._encode(None))
            try:
                self._container.close()
            except (av.FFmpegError, ValueError) as exc:
                raise UserError(f"error finishing {self.path}: {_describe(exc)}") from None
        except BaseException as exc:
            self._discard(exc)
            raise
        self._closed = True
        self._stack.close()  # atomic_output: rename onto the destination

    def abort(self) -> None:
        """Stop without producing an output file."""
        self._discard(None)

    def _discard(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
        exc = exc or _Aborted()
        # Hand the exception to atomic_output so it deletes the temporary file.
        self._stack.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self._discard(exc)


class _Aborted(Exception):
    """Stands in for the exception when a writer is aborted on purpose."""


def transcode(
    src: str | Path,
    dst: str | Path,
    process: Callable[[Frame], np.ndarray | ProcessedFrame],
    encode: EncodeConfig | None = None,
    overwrite: bool = False,
    on_frame: Callable[[int, FrameStats | None], None] | None = None,
    drop_unsupported: bool = False,
) -> TranscodeResult:
    """Decode ``src``, pass each frame through ``process``, write ``dst`` with every other stream copied.

    ``process(frame)`` returns the new RGB image for that frame (same size), or a
    :class:`ProcessedFrame` carrying stats too; the image must not be changed afterwards (it is
    encoded on another thread, see :mod:`.background`). ``on_frame(index, stats_or_none)`` is
    called after each frame is queued for the encoder (for progress). The input is read
    once; ``dst`` appears only if everything succeeded. See the module docs for what is
    kept (timestamps, rotation, colour, streams) and how odd sizes are handled.
    ``drop_unsupported`` leaves out streams the output container cannot hold instead of
    failing (see :class:`VideoWriter`).
    """
    src, dst = Path(src), Path(dst)
    if is_image_path(src):
        raise UserError(f"{src} is an image, not a video")
    check_paths(src, dst, overwrite)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(VideoReader(src))
        writer = stack.enter_context(VideoWriter(dst, reader, encode, drop_unsupported))
        video = writer.video_stream.codec_context
        log.info("%s: encoding %s %s (%s); %d other stream(s) copied bit-exact%s", dst, video.name, writer.pix_fmt,
                 ", ".join(f"{k}={v}" for k, v in writer.encoder_options.items()) or "encoder defaults",
                 writer.copied_streams, f", left out: {', '.join(writer.dropped_streams)}"
                 if writer.dropped_streams else "")  # fmt: skip
        # Decoding and encoding run on their own threads, overlapping with ``process``. Exit
        # order: the write thread finishes before the writer flushes; the read thread stops
        # before the reader closes.
        output = stack.enter_context(WriteBehind(name="streamanon-encode"))
        items = stack.enter_context(contextlib.closing(read_ahead(reader.demux(), name="streamanon-decode")))
        for item in items:
            if isinstance(item, Frame):
                result = process(item)
                stats = None
                if isinstance(result, ProcessedFrame):
                    result, stats = result.image, result.stats
                output.submit(writer.write, item, result)
                if on_frame is not None:
                    on_frame(item.index, stats)
            else:
                output.submit(writer.mux_passthrough, item)
    return TranscodeResult(
        frames=writer.frames_written,
        seconds=time.perf_counter() - start,
        input=src,
        output=dst,
        copied_streams=writer.copied_streams,
        dropped_streams=tuple(writer.dropped_streams),
        codec=writer.encode.codec,
        pix_fmt=writer.pix_fmt,
    )


def to_display(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a frame as coded into the upright view a player shows (``rotation`` from :attr:`VideoReader.rotation`).

    A ``rotation`` that is not a multiple of 90 degrees is rounded to the nearest quarter turn
    (ties to the even one): the image is never resampled.
    """
    return np.ascontiguousarray(np.rot90(image, _quarter_turns(rotation)))


def from_display(image: np.ndarray, rotation: int) -> np.ndarray:
    """Inverse of :func:`to_display`: turn an upright image back to the coded orientation."""
    return np.ascontiguousarray(np.rot90(image, -_quarter_turns(rotation)))


def _quarter_turns(rotation: int) -> int:
    # A rotation that is no multiple of 90 degrees (rare: some editors and screen recorders
    # write one) goes to the nearest quarter turn, ties (45, 135) to the even one: the frame
    # is then at most 45 degrees from how players show it. Turning by the exact angle would
    # resample the whole picture twice (into the upright view and back) and blur every pixel,
    # and refusing the file helps no one: its faces are in the picture whatever the display
    # matrix says, at a tilt the detector meets in any video of tilted heads. The writer
    # keeps the input's exact display matrix, so the output plays like the input.
    return round(rotation / 90) % 4
