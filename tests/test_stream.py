"""Live streams on loopback only: UDP/TCP MPEG-TS served from a thread, raw pipes, segments, signals.

The end-to-end tests feed a 360x288 GRID clip (one frontal speaker, 25 fps) and check that the
speaker's face comes out hidden, that frame counts and files are right, and that the latency
figures are printed. Every loop here is bounded in time and count.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import PROJECT_ROOT, shared_path

from streamanon.cli import main
from streamanon.errors import UserError
from streamanon.live.latency import LatencyStats
from streamanon.live.queues import FrameQueue
from streamanon.live.raw import frame_bytes, raw_to_rgb, rgb_to_raw
from streamanon.live.runner import MAX_CONSECUTIVE_FAILURES, StreamOptions, StreamRunner
from streamanon.live.sinks import RawSink, SinkSettings, open_sink
from streamanon.live.sources import RawSource, SourceSettings, open_source
from streamanon.live.timeline import Timeline
from streamanon.pipeline import Anonymizer

CLIP = "videos/grid_speaker_00.mpg"
WIDTH, HEIGHT = 360, 288


# -- helpers ---------------------------------------------------------------------------------
class _Sender:
    """File-like object the MPEG-TS muxer writes into: forwards the bytes to a socket."""

    def __init__(self, send) -> None:
        self._send = send

    def write(self, data) -> int:
        self._send(bytes(data))
        return len(data)


class ClipServer:
    """Serves a clip as MPEG-TS over UDP or TCP on 127.0.0.1 from a thread, paced at its frame rate.

    Packets are remuxed (no re-encoding: the test machine's cores stay free). ``max_frames``
    makes the server stop mid-stream, as a killed source would; ``loops`` repeats the clip.
    """

    def __init__(self, clip: Path, protocol: str, loops: int = 1, max_frames: int | None = None) -> None:
        self.clip, self.protocol, self.loops, self.max_frames = clip, protocol, loops, max_frames
        self.sent = 0
        self.finished = threading.Event()
        self._stop = threading.Event()
        if protocol == "udp":
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
            probe.close()
        else:
            self._listener = socket.socket()
            self._listener.bind(("127.0.0.1", 0))
            self._listener.listen(1)
            self._listener.settimeout(20)
            self.port = self._listener.getsockname()[1]
        self.url = f"{protocol}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ClipServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        connection = None
        try:
            if self.protocol == "udp":
                self._wait_for_udp_receiver()
                connection = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

                def send(data: bytes) -> None:
                    for start in range(0, len(data), 1316):
                        connection.sendto(data[start:start + 1316], ("127.0.0.1", self.port))
            else:
                connection, _ = self._listener.accept()
                send = connection.sendall
            self._serve(send)
        except OSError:
            pass  # the receiver went away or never came: the test says what it expected
        finally:
            if connection is not None:
                connection.close()
            if self.protocol == "tcp":
                self._listener.close()  # later connects are refused, like a dead server's
            self.finished.set()

    def _wait_for_udp_receiver(self, timeout: float = 20.0) -> None:
        """Hold the datagrams until the receiver has bound the port (they would be lost before)."""
        table = Path("/proc/net/udp")
        if not table.exists():
            self._stop.wait(3.0)  # no socket table to look at: give the receiver time to start
            return
        bound = {f"0100007F:{self.port:04X}", f"00000000:{self.port:04X}"}  # 127.0.0.1 or any, as listed
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if any(line.split()[1] in bound for line in table.read_text().splitlines()[1:]):
                return
            time.sleep(0.05)

    def _serve(self, send) -> None:
        out = av.open(_Sender(send), "w", format="mpegts")
        video = None
        offset, last_dts = 0.0, None
        for _ in range(self.loops):
            with av.open(str(self.clip)) as clip:
                source = clip.streams.video[0]
                if video is None:
                    video = out.add_stream_from_template(source)
                started, first, last = time.monotonic(), None, 0.0
                for packet in clip.demux(source):
                    if packet.dts is None:
                        continue
                    seconds = float(packet.dts * packet.time_base)
                    first = seconds if first is None else first
                    wait = (seconds - first) - (time.monotonic() - started)
                    if self._stop.wait(max(0.0, wait)):
                        return
                    shift = round(offset / packet.time_base)
                    packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                    if last_dts is not None and packet.dts <= last_dts:
                        packet.dts = last_dts + 1  # the clip repeats its first dts; MPEG-TS wants them rising
                    last_dts = packet.dts
                    packet.stream = video
                    out.mux(packet)
                    last = max(last, float(packet.pts * packet.time_base) - float(offset) - first)
                    self.sent += 1
                    if self.max_frames is not None and self.sent >= self.max_frames:
                        return  # stop dead, without closing the muxer: a killed source
                offset += last + 0.04
        out.close()


def decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def clip_frames(clip: Path, count: int) -> list[np.ndarray]:
    with av.open(str(clip)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def sharpness(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x1, y1, x2, y2 = box
    gray = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


@pytest.fixture(scope="module")
def face():
    """The speaker's face box in the clip and its sharpness there (he barely moves)."""
    from streamanon.faces.detect import CenterFaceDetector

    frames = clip_frames(shared_path(CLIP), 30)
    detections = CenterFaceDetector()(frames[0])
    assert len(detections) == 1, "the GRID clip shows one face"
    x1, y1, x2, y2 = detections.boxes[0]
    # The inner half of the box: inside any hiding shape, and all face detail.
    w, h = x2 - x1, y2 - y1
    box = (int(x1 + w / 4), int(y1 + h / 4), int(x2 - w / 4), int(y2 - h / 4))
    return box, float(np.median([sharpness(f, box) for f in frames]))


def assert_face_hidden(images, face) -> None:
    box, original = face
    assert images, "no frames to check"
    worst = max(sharpness(image, box) for image in images)
    assert worst < 0.2 * original, f"face still sharp: {worst:.1f} vs {original:.1f} in the source"


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(["stream", *(str(a) for a in args)])
    return code, capsys.readouterr().err


# -- units -----------------------------------------------------------------------------------
def test_realtime_queue_drops_the_oldest_and_counts():
    queue = FrameQueue(2, "realtime")
    evicted = [queue.put(i) for i in range(5)]
    assert evicted == [None, None, 0, 1, 2]
    assert queue.dropped == 3
    assert [queue.get(0.01), queue.get(0.01), queue.get(0.01)] == [3, 4, None]


def test_lossless_queue_blocks_until_there_is_room():
    queue = FrameQueue(1, "lossless")
    queue.put("a")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (queue.put("b"), done.set()))
    thread.start()
    assert not done.wait(0.3), "put into a full lossless queue must wait"
    assert queue.get(1.0) == "a"
    assert done.wait(2.0)
    assert queue.get(1.0) == "b" and queue.dropped == 0
    stop = threading.Event()
    stop.set()
    queue.put("c")
    assert queue.put("d", stop) == "d", "a stopping stream must not hang in put"
    thread.join(1.0)


def test_latency_percentiles_match_numpy():
    rng = np.random.default_rng(0)
    samples = rng.lognormal(np.log(0.05), 0.6, 20000)
    stats = LatencyStats()
    for value in samples:
        stats.add(value)
    window, total = stats.window(), stats.total()
    expected = np.percentile(samples, [50, 99])
    assert window.p50 == pytest.approx(expected[0]) and window.p99 == pytest.approx(expected[1])
    assert total.p50 == pytest.approx(expected[0], rel=0.01) and total.p99 == pytest.approx(expected[1], rel=0.01)
    assert total.max == pytest.approx(samples.max()) and total.count == len(samples)
    assert stats.window().count == 0, "a window starts empty after it is read"
    assert "p50 " in total.line() and "p99 " in total.line()


def test_timeline_follows_the_source_clock_and_bridges_restarts():
    timeline = Timeline()
    # 25 fps source clock, captured with jitter; then a reconnect restarts the clock at 0.
    times = [timeline(10.0 + i * 0.04, 100.0 + i * 0.04 + (0.01 if i % 2 else 0)) for i in range(5)]
    assert times == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16])
    after = timeline(0.0, 103.0)  # 2.84 s of capture time later
    assert after == pytest.approx(0.16 + 2.84) and timeline.discontinuities == 1
    assert timeline(None, 103.0) > after, "output times strictly increase"


@pytest.mark.parametrize("pix_fmt", ["rgb24", "bgr24", "yuv420p"])
def test_raw_frames_round_trip(pix_fmt):
    image = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8), (9, 9), 4)
    data = rgb_to_raw(image, pix_fmt)
    assert len(data) == frame_bytes(pix_fmt, 64, 48)
    back = raw_to_rgb(data, pix_fmt, 64, 48)
    if pix_fmt == "yuv420p":
        # Same conversion as FFmpeg's (BT.601, limited range): compare with swscale.
        theirs = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        luma = np.frombuffer(bytes(theirs.planes[0]), np.uint8).reshape(48, -1)[:, :64]
        assert np.abs(luma.astype(int) - np.frombuffer(data, np.uint8)[: 48 * 64].reshape(48, 64)).max() <= 1
        assert np.abs(back.astype(int) - image).mean() < 4
    else:
        assert np.array_equal(back, image)
    if pix_fmt == "bgr24":
        assert data[:3] == bytes(image[0, 0, ::-1])


def test_specs_are_checked_before_streaming(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--size"):
        open_source("-", SourceSettings())
    with pytest.raises(UserError, match="even size"):
        open_source("-", SourceSettings(size=(361, 288), pix_fmt="yuv420p"))
    with pytest.raises(UserError, match="unknown source"):
        open_source("gopher://127.0.0.1/x")
    with pytest.raises(UserError, match="cameras and raw stdin only"):
        open_source("udp://127.0.0.1:5000", SourceSettings(size=(640, 480)))
    with pytest.raises(UserError, match="camera not found"):
        open_source("/dev/video987")
    if sys.platform.startswith("linux"):
        # Camera options reach FFmpeg's v4l2 device under its own names; a character device
        # that is no camera (ENOTTY) fails at once: no reconnect makes it one.
        camera = open_source("/dev/null", SourceSettings(size=(640, 480), fps=29.97, pix_fmt="mjpeg",
                                                        stall_timeout=1, open_timeout=1))  # fmt: skip
        assert camera.live and camera.format == "v4l2"
        assert camera.options == {"video_size": "640x480", "framerate": "2997/100", "input_format": "mjpeg"}
        with pytest.raises(UserError, match="Inappropriate ioctl"):
            camera.open()
    existing = tmp_path / "rec.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(UserError, match="--overwrite"):
        open_sink(str(existing))
    (tmp_path / "seg_00000.mkv").write_bytes(b"keep me")
    with pytest.raises(UserError, match="segments exist"):
        open_sink(str(tmp_path / "seg.mkv"), SinkSettings(segment_seconds=5))
    with pytest.raises(UserError, match="needs a port"):
        open_sink("udp://127.0.0.1")
    for size in ("abc", "0", "70000"):
        with pytest.raises(UserError, match="pkt_size must be"):
            open_sink(f"udp://127.0.0.1:5000?pkt_size={size}")
    with pytest.raises(UserError, match="receiver listen"):
        open_sink("tcp://127.0.0.1:5000?listen=1")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        with pytest.raises(UserError, match="no display"):
            open_sink("preview")
    assert existing.read_bytes() == b"keep me"


def test_realtime_generate_stream_chooses_identities_in_the_background(capsys, tmp_path):
    """No frame of a live stream waits ~1 s for a new face's identity; lossless streams and files do."""
    pytest.importorskip("torch")
    clip = shared_path("videos/talking_512_katiehill.mp4")
    code, err = run_cli(capsys, clip, tmp_path / "rt.mp4", "--mode", "generate", "--duration", "1.5")
    assert code == 0 and "identity guard in the background]" in err, err
    code, err = run_cli(capsys, clip, tmp_path / "ll.mp4", "--mode", "generate", "--duration", "1",
                        "--latency", "lossless")  # fmt: skip
    assert code == 0 and "in the background" not in err, err
    config = tmp_path / "sync.toml"
    config.write_text("[generate]\nguard_background = false\n")
    code, err = run_cli(capsys, clip, tmp_path / "sync.mp4", "--mode", "generate", "--duration", "1",
                        "--config", config)  # fmt: skip
    assert code == 0 and "in the background" not in err, err  # an explicit setting wins


def test_cli_bad_input_is_one_line(capsys, tmp_path):
    code, err = run_cli(capsys, "-", tmp_path / "out.mp4")
    assert code == 1 and "--size" in err and "Traceback" not in err
    code, err = run_cli(capsys, "-", tmp_path / "out.png", "--size", "64x48")
    assert code == 1 and "extension" in err
    assert not list(tmp_path.iterdir()), "nothing is written for a bad command line"


def test_a_recording_never_overwrites_its_input(capsys, tmp_path):
    """By a file: URL, or as one of the segments it would write (an audit overwrote both ways)."""
    clip = tmp_path / "v.mp4"
    clip.write_bytes(shared_path(CLIP).read_bytes())
    before = clip.read_bytes()
    code, err = run_cli(capsys, f"file://{clip}", clip, "--overwrite", "--duration", "1")
    assert code == 1 and "must differ from the input" in err
    segment = tmp_path / "rec_00000.mpg"
    segment.write_bytes(before)
    code, err = run_cli(capsys, segment, tmp_path / "rec.mpg", "--segment-seconds", "1", "--overwrite")
    assert code == 1 and "is one of the segments" in err
    assert clip.read_bytes() == before == segment.read_bytes()


def test_errors_no_reconnect_can_fix_end_the_stream_at_once(capsys, tmp_path):
    """An unknown --source-format, a file that is no video, a device that is no camera: one line
    at once, not after five reconnect attempts (about 16 s)."""
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    for args in ((shared_path(CLIP), "--source-format", "bogusfmt"), (junk,), ("/dev/null",)):
        started = time.monotonic()
        code, err = run_cli(capsys, args[0], tmp_path / "out.mp4", *args[1:], "-q")
        assert code == 1 and "cannot open" in err and time.monotonic() - started < 8, (args, err)
        assert "attempt" not in err and "gave up" not in err, err


def test_a_tcp_output_that_would_listen_is_refused_in_either_spelling(capsys, tmp_path):
    for spec in ("tcp://127.0.0.1:5000?listen", "tcp://127.0.0.1:5000?listen=1"):
        code, err = run_cli(capsys, shared_path(CLIP), spec)
        assert code == 1 and "let the receiver listen" in err, spec


def test_a_stream_that_delivers_nothing_fails(capsys, tmp_path):
    """No frame from the source (an empty pipe here; a sender that never comes): exit 1, not 0."""
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        source = RawSource(WIDTH, HEIGHT, "rgb24", fps=25, stream=pipe)
        summary = StreamRunner(source, [RawSink("rgb24", stream=io.BytesIO())], Anonymizer(),
                               StreamOptions(latency="lossless")).run()  # fmt: skip
    assert summary.frames_in == 0 and summary.error and "no frame arrived" in summary.error


def test_overwriting_a_segmented_recording_removes_the_old_run_s_later_segments(capsys, tmp_path):
    target = tmp_path / "rec.mkv"
    for index in range(4):  # an earlier, longer recording
        (tmp_path / f"rec_{index:05d}.mkv").write_bytes(b"old")
    code, err = run_cli(capsys, shared_path(CLIP), target, "--segment-seconds", "1", "--duration", "1.5",
                        "--latency", "lossless", "--overwrite", "-q")  # fmt: skip
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names in (["rec_00000.mkv"], ["rec_00000.mkv", "rec_00001.mkv"]), names
    assert all(p.read_bytes() != b"old" for p in tmp_path.iterdir())


# -- the runner's fail-closed paths -----------------------------------------------------------
class FailingAnonymizer(Anonymizer):
    """The real anonymizer, with a stage failure injected on chosen frames (fault injection)."""

    def __init__(self, fail_on) -> None:
        super().__init__()
        self.fail_on = fail_on

    def process_frame(self, frame):
        if self.fail_on(frame.index):
            raise RuntimeError(f"injected failure on frame {frame.index}")
        return super().process_frame(frame)


def run_raw(frames, anonymizer, options, interval: float = 0.0, burst: int = 1, report=None):
    """Stream RGB ``frames`` through a pipe into a StreamRunner; return (summary, output frames).

    The frames arrive ``burst`` at a time every ``interval`` seconds (a jittery camera).
    """
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        try:
            with os.fdopen(write_fd, "wb") as pipe:
                for start in range(0, len(frames), burst):
                    pipe.write(b"".join(rgb_to_raw(image, "rgb24") for image in frames[start:start + burst]))
                    pipe.flush()
                    time.sleep(interval)
        except BrokenPipeError:
            pass  # the stream stopped reading (the test checks why)

    out = io.BytesIO()
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with os.fdopen(read_fd, "rb") as pipe:
        source = RawSource(WIDTH, HEIGHT, "rgb24", fps=25, stream=pipe)
        summary = StreamRunner(source, [RawSink("rgb24", stream=out)], anonymizer, options, report).run()
    writer.join(5)
    data, size = out.getvalue(), frame_bytes("rgb24", WIDTH, HEIGHT)
    assert len(data) % size == 0
    return summary, [raw_to_rgb(data[i:i + size], "rgb24", WIDTH, HEIGHT) for i in range(0, len(data), size)]


def test_stage_errors_fail_closed(face):
    frames = clip_frames(shared_path(CLIP), 12)
    failing = {0, 4, 7, 8, 11}  # frame 0: nothing is known yet, so it must not go out at all
    summary, out = run_raw(frames, FailingAnonymizer(lambda i: i in failing), StreamOptions(latency="lossless"))
    assert summary.error is None and summary.end_reason == "end of input"
    assert (summary.failed, summary.withheld) == (5, 1)
    assert len(out) == summary.frames_out == 11, "every failed frame but the first still goes out"
    assert_face_hidden(out, face)  # including the four sent with only the known faces blurred


def test_processing_that_keeps_failing_stops_the_stream(face):
    frames = clip_frames(shared_path(CLIP), 1) * (MAX_CONSECUTIVE_FAILURES + 10)
    summary, out = run_raw(frames, FailingAnonymizer(lambda i: True), StreamOptions(latency="lossless"))
    assert summary.error and "in a row" in summary.error
    assert summary.failed >= MAX_CONSECUTIVE_FAILURES and out == [], "nothing unprocessed goes out"


def test_progress_lines_that_cannot_be_written_do_not_cost_the_recording(face):
    """stderr piped into a reader that quit: the report callback raises BrokenPipeError; the
    stream goes on to the end without it, every frame out and hidden."""
    frames = clip_frames(shared_path(CLIP), 12)
    calls = []

    def gone(line: str) -> None:
        calls.append(line)
        raise BrokenPipeError(32, "Broken pipe")

    options = StreamOptions(latency="lossless", report_every=0.001)
    summary, out = run_raw(frames, Anonymizer(), options, interval=0.02, report=gone)
    assert len(calls) == 1, "a broken stream is not written to again"
    assert summary.error is None and summary.end_reason == "end of input" and len(out) == 12
    assert_face_hidden(out, face)


def test_realtime_catches_up_with_late_frames_blurred(face):
    frames = clip_frames(shared_path(CLIP), 40)
    options = StreamOptions(latency="realtime", queue_size=4, max_latency=0.001)
    # 25 fps in bursts of four: whatever the machine's speed, frames wait behind the one processed.
    summary, out = run_raw(frames, Anonymizer(), options, interval=0.16, burst=4)
    assert summary.late > 0, "frames that waited too long skip detection"
    assert summary.frames_out == len(out) and summary.frames_out + summary.dropped == 40
    assert_face_hidden(out, face)


# -- display rotation (phone clips) -----------------------------------------------------------
def write_rotated_clip(path: Path, upright: list[np.ndarray], rotation: int) -> Path:
    """A phone-style clip: each frame stored turned away from upright, with the display matrix
    (``rotation`` degrees counter-clockwise, PyAV's sense) that turns it back for players."""
    turns = rotation // 90
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        coded = np.ascontiguousarray(np.rot90(upright[0], -turns))
        stream.height, stream.width = coded.shape[:2]
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "12"}
        stream.set_display_rotation(rotation)
        for index, image in enumerate(upright):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(image, -turns)), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        first = next(container.decode(video=0))
        assert (first.rotation % 360, first.width, first.height) == (rotation % 360, coded.shape[1], coded.shape[0])
    return path


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_file_source_turns_rotated_frames_upright(tmp_path, rotation):
    upright = clip_frames(shared_path(CLIP), 4)
    clip = write_rotated_clip(tmp_path / f"phone_{rotation}.mp4", upright, rotation)
    source = open_source(str(clip))
    source.open()
    try:
        frames = [image for image, _ in source.frames(threading.Event())]
    finally:
        source.close()
    assert len(frames) == len(upright)
    for got, want in zip(frames, upright):
        assert got.shape == want.shape, "frames come out as a player shows them"
        error = np.abs(got.astype(int) - want).mean()
        assert error < 4 and error < 0.2 * np.abs(np.rot90(want, 2).astype(int) - want).mean(), error
    assert source.rotation % 360 == rotation % 360


def test_relative_file_name_with_a_colon_is_a_file_not_a_protocol(tmp_path, monkeypatch):
    clip = write_rotated_clip(tmp_path / "clip:1.mp4", clip_frames(shared_path(CLIP), 2), 0)
    monkeypatch.chdir(tmp_path)
    source = open_source(clip.name)
    source.open()
    try:
        assert len(list(source.frames(threading.Event()))) == 2 and source.name == "clip:1.mp4"
    finally:
        source.close()


def test_rotated_phone_clip_streams_upright_with_the_face_hidden(capsys, tmp_path, face):
    """Detection sees the upright face, and the sink (files, pipes and network streams may carry no
    display matrix) gets upright frames with no rotation left to apply."""
    upright = clip_frames(shared_path(CLIP), 10)
    clip = write_rotated_clip(tmp_path / "phone.mp4", upright, -90)
    out = tmp_path / "out.mp4"
    code, err = run_cli(capsys, clip, out, "--latency", "lossless", "--report-every", "0")
    assert code == 0, err
    frames = decode(out)
    assert len(frames) == len(upright), err
    assert {(f.rotation, f.width, f.height) for f in frames} == {(0, WIDTH, HEIGHT)}
    images = [f.to_ndarray(format="rgb24") for f in frames]
    assert_face_hidden(images, face)  # the face's box in the upright picture
    from streamanon.config import ReplaceConfig
    from streamanon.faces.detect import CenterFaceDetector
    from streamanon.replace import hide_ellipse

    # Away from the hidden ellipse (grown by 10 % for the tracker's smoothing) the picture is the source's.
    x1, y1, x2, y2 = hide_ellipse(CenterFaceDetector()(upright[5]).boxes[0], ReplaceConfig().margin)
    pad_x, pad_y = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    away = np.ones((HEIGHT, WIDTH), bool)
    away[max(0, int(y1 - pad_y)) : int(y2 + pad_y), max(0, int(x1 - pad_x)) : int(x2 + pad_x)] = False
    assert away.mean() > 0.3, "the test needs picture away from the face"
    error = np.abs(images[5].astype(int) - upright[5])[away].mean()
    assert error < 4, f"the rest of the picture is upright and unchanged (mean error {error:.1f})"


# -- end to end ------------------------------------------------------------------------------
def test_udp_stream_is_anonymized_with_latency_report(capsys, tmp_path, face):
    out = tmp_path / "udp.mp4"
    with ClipServer(shared_path(CLIP), "udp", loops=3) as server:
        code, err = run_cli(capsys, server.url, out, "--duration", "3", "--report-every", "1", "--stall-timeout", "5")
    assert code == 0, err
    frames = decode(out)
    assert len(frames) >= 5, err
    assert (frames[0].width, frames[0].height) == (WIDTH, HEIGHT)
    times = [f.time for f in frames]
    assert all(b > a for a, b in zip(times, times[1:])), "timestamps increase"
    assert_face_hidden([f.to_ndarray(format="rgb24") for f in frames], face)
    progress = [line for line in err.splitlines() if "last 1 s: latency p50" in line]
    assert progress, f"no periodic latency line in:\n{err}"
    final = [line for line in err.splitlines() if "stream ended (3 s duration reached)" in line]
    assert final and " p50 " in final[0] and " p99 " in final[0], err
    assert "frames in" in final[0] and "dropped" in final[0]


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_source_killed_mid_stream_leaves_a_playable_output(capsys, tmp_path, face, protocol):
    out = tmp_path / f"killed_{protocol}.mkv"
    with ClipServer(shared_path(CLIP), protocol, max_frames=30) as server:
        code, err = run_cli(capsys, server.url, out, "--stall-timeout", "1", "--max-retries", "1",
                            "--report-every", "0", "--latency", "lossless", "--queue-size", "8")  # fmt: skip
        assert server.finished.wait(10)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert any("reconnecting in 0.5 s (attempt 1 of 1)" in line for line in lines), err
    assert lines[-1].startswith(f"streamanon: error: source {server.url}:"), err
    assert "gave up after 1 reconnect attempt" in lines[-1]
    frames = decode(out)
    # Lossless: every frame that arrived was processed and written before the stream ended.
    assert 5 <= len(frames) <= 30, err
    assert_face_hidden([f.to_ndarray(format="rgb24") for f in frames], face)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial file left behind"


def test_tcp_output_is_received_whole(capsys, tmp_path, face):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    received: list[np.ndarray] = []

    def receive() -> None:  # a viewer listening, as `ffplay tcp://...?listen` would
        with av.open(f"tcp://127.0.0.1:{port}?listen=1", timeout=(20, 10)) as container:
            for frame in container.decode(video=0):
                received.append(frame.to_ndarray(format="rgb24"))

    viewer = threading.Thread(target=receive, daemon=True)
    viewer.start()
    time.sleep(0.3)
    code, err = run_cli(capsys, shared_path(CLIP), f"tcp://127.0.0.1:{port}", "--duration", "2", "--report-every", "0")
    viewer.join(15)
    assert code == 0, err
    sent = int(err.split(" frames in, ")[1].split(" out")[0])
    assert sent >= 3 and len(received) == sent, err
    assert_face_hidden(received, face)


def test_http_recording_plays_at_its_own_rate_and_ends(capsys, tmp_path, face):
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    clip = shared_path(CLIP)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(clip.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{clip.name}"
        code, err = run_cli(capsys, url, tmp_path / "http.mkv", "--report-every", "0")
    finally:
        server.shutdown()
        thread.join(5)
    assert code == 0, err
    assert "stream ended (end of input): 75 frames in" in err, "a recording is not replayed by a reconnect"
    frames = decode(tmp_path / "http.mkv")
    assert len(frames) >= 5 and frames[-1].time - frames[0].time > 2.5, "paced: the output spans the clip"
    assert_face_hidden([f.to_ndarray(format="rgb24") for f in frames], face)


_PREVIEW_PROBE = """
import numpy as np, cv2
from streamanon.live.sinks import PreviewSink
sink = PreviewSink()
for i in range(5):
    sink.write(np.full((48, 64, 3), 40 * i, np.uint8), i / 25)
visible = cv2.getWindowProperty(PreviewSink.WINDOW, cv2.WND_PROP_VISIBLE) if sink._backend == "opencv" else 1
print(sink._backend, visible)
sink.close()
"""


def test_preview_window_on_a_virtual_display():
    import shutil

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed: no virtual display to open a preview window on")
    display = f":{50 + os.getpid() % 1000}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "320x240x24"], stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        result = subprocess.run([sys.executable, "-c", _PREVIEW_PROBE], capture_output=True, timeout=60,
                                env={**_env(), "DISPLAY": display}, cwd=PROJECT_ROOT)  # fmt: skip
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    assert result.returncode == 0, result.stderr.decode()
    backend, visible = result.stdout.decode().split()
    assert backend in ("opencv", "ffplay") and float(visible) >= 1, "the window is shown"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamanon", "stream", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


def test_raw_stdin_to_stdout_round_trip(face):
    frames = clip_frames(shared_path(CLIP), 12)
    data = b"".join(rgb_to_raw(f, "bgr24") for f in frames)
    result = subprocess.run(
        _cli("-", "-", "--size", f"{WIDTH}x{HEIGHT}", "--pix-fmt", "bgr24", "--fps", "25", "--latency", "lossless"),
        input=data, capture_output=True, timeout=60, env=_env(), cwd=PROJECT_ROOT,
    )  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 0, err
    size = frame_bytes("bgr24", WIDTH, HEIGHT)
    assert len(result.stdout) == len(frames) * size, "stdout holds exactly the frames and nothing else"
    out = [raw_to_rgb(result.stdout[i * size:(i + 1) * size], "bgr24", WIDTH, HEIGHT) for i in range(len(frames))]
    assert_face_hidden(out, face)
    # Everything outside the hidden ellipse (grown by 10 % for the tracker's smoothing) is untouched.
    from streamanon.config import ReplaceConfig
    from streamanon.faces.detect import CenterFaceDetector
    from streamanon.replace import hide_ellipse

    x1, y1, x2, y2 = hide_ellipse(CenterFaceDetector()(frames[5]).boxes[0], ReplaceConfig().margin)
    pad_x, pad_y = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    outside = np.ones((HEIGHT, WIDTH), bool)
    outside[max(0, int(y1 - pad_y)) : int(y2 + pad_y), max(0, int(x1 - pad_x)) : int(x2 + pad_x)] = False
    assert outside.mean() > 0.3, "the test needs frame area away from the face"
    assert np.abs(out[5].astype(int) - frames[5])[outside].max() == 0, "only the face is changed"
    assert "12 frames in, 12 out, 0 dropped" in err and "p99" in err, err


def test_segmented_recording_finishes_cleanly_on_sigterm(tmp_path):
    clip = shared_path(CLIP)
    target = tmp_path / "rec.mp4"
    process = subprocess.Popen(
        _cli(str(clip), str(target), "--segment-seconds", "0.5", "--report-every", "0", "--mode", "solid"),
        stderr=subprocess.PIPE, env=_env(), cwd=PROJECT_ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not (tmp_path / "rec_00001.mp4").exists():
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.1)
        assert (tmp_path / "rec_00001.mp4").exists(), "two segments within 40 s"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    err = err.decode()
    assert process.returncode == 0, err
    assert "SIGTERM: stopping" in err and "stream ended (SIGTERM received)" in err, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.startswith(".")], f"partial files left: {names}"
    assert names == [f"rec_{i:05d}.mp4" for i in range(len(names))] and len(names) >= 2, names
    total = 0
    for name in names:
        frames = decode(tmp_path / name)
        assert frames and frames[0].key_frame, f"{name} starts with a keyframe"
        assert frames[-1].time - frames[0].time < 0.5 + 1e-6, f"{name} is at most one segment long"
        total += len(frames)
    assert f"{total} out" in err, err
