"""The command line: every bad input gives one clear line, a non-zero exit, and no file."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import shared_path
from streamanon.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def make_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.rate, frame.pts, frame.time_base = 16000, i * 1024, Fraction(1, 16000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_bad_inputs_one_line_nonzero_no_partial(tmp_path, capsys):
    clip = shared_path("videos/grid_speaker_01.mpg")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    audio_only = tmp_path / "audio_only.m4a"
    make_audio_only(audio_only)
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"keep me")
    cases = [
        ((tmp_path / "missing.mp4", tmp_path / "o1.mp4"), "not found"),
        ((garbage, tmp_path / "o2.mp4"), "garbage.mp4"),
        ((audio_only, tmp_path / "o3.mp4"), "no video stream"),
        ((clip, clip), "differ"),
        ((clip, existing), "--overwrite"),
        ((clip, tmp_path / "no_such_dir" / "o4.mp4"), "no_such_dir"),
        ((clip, tmp_path / "o5.mp4", "--mode", "banana"), "banana"),
        ((clip, tmp_path / "o6.mp4", "--codec", "nonexistent_codec"), "nonexistent_codec"),
        # torch's own reason is a paragraph advising weights_only=False: not repeated
        ((clip, tmp_path / "o7.mp4", "--mode", "generate", "--weights", garbage), "not a PyTorch weights file"),
    ]
    for args, expected in cases:
        before = files_in(tmp_path)
        code, err = run_cli(capsys, "file", *args)
        assert code != 0, args
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert expected.lower() in err.lower(), (expected, err)
        assert files_in(tmp_path) == before, f"{args}: left {files_in(tmp_path) - before}"
    assert existing.read_bytes() == b"keep me"


def test_unwritable_directory(tmp_path, capsys):
    clip = shared_path("videos/grid_speaker_01.mpg")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root): cannot plant an unwritable dir")
        code, err = run_cli(capsys, "file", clip, locked / "out.mp4")
        assert code != 0 and "writable" in err.lower()
    finally:
        locked.chmod(0o700)


def test_overwrite_and_summary(tmp_path, capsys):
    clip = shared_path("videos/grid_speaker_02.mpg")
    out = tmp_path / "out.mkv"
    out.write_bytes(b"old")
    code, err = run_cli(capsys, "file", clip, out, "--overwrite", "--mode", "pixelate", "--crf", "28")
    assert code == 0, err
    assert "75 frames" in err and "tracks" in err and "fps" in err
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames in (0, 75)  # mkv may not store a count
    assert files_in(tmp_path) == {"out.mkv"}


def test_quiet_prints_nothing(tmp_path, capsys):
    clip = shared_path("images/multiface.jpg")
    code, err = run_cli(capsys, "file", clip, tmp_path / "o.jpg", "--quiet")
    assert code == 0 and err == ""


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "streamanon", "file", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--overwrite" in result.stdout and "--detect-scale" in result.stdout


def test_a_message_over_several_lines_is_printed_on_one(capsys, monkeypatch):
    """Whatever library wrote an error's text, the user gets one line."""
    import streamanon.cli as cli_module
    from streamanon.errors import UserError

    def fails(*args, **kwargs):
        raise UserError("first part\n  second part\n")

    monkeypatch.setattr(cli_module, "_register_optional_commands", fails)
    code, err = run_cli(capsys, "--help")
    assert code == 1 and err == "streamanon: error: first part second part"


def test_verbose_says_what_goes_in_what_comes_out_and_when_faces_come_and_go(tmp_path):
    from streamanon.bench.scenes import trim_clip

    clip, _ = trim_clip(shared_path("videos/talking_512_katiehill.mp4"), 6, tmp_path / "six.mp4")
    done = subprocess.run([sys.executable, "-m", "streamanon", "-v", "file", str(clip), str(tmp_path / "out.ts")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for expected in (
        "faces replaced by blur on cpu; detection: threshold 0.4",
        "six.mp4: 512x512 h264 video, 25 fps, 6 frames, rotation 0; other streams: none",
        "out.ts: encoding libx264 yuv420p (bf=0, crf=18, preset=veryfast); 0 other stream(s) copied",
        "track 1 started at 0.00 s",
    ):
        assert expected in done.stderr, (expected, done.stderr)


def test_generate_only_options_in_another_mode_are_named_not_silently_ignored(tmp_path, caplog):
    from streamanon.bench.scenes import trim_clip

    clip, _ = trim_clip(shared_path("videos/talking_512_katiehill.mp4"), 2, tmp_path / "two.mp4")
    assert main(["file", str(clip), str(tmp_path / "out.mp4"), "-q", "--seed", "3", "--no-relight"]) == 0
    assert "--seed, --no-relight: used in generate mode only; this run hides faces by blur" in caplog.text
    caplog.clear()
    assert main(["file", str(clip), str(tmp_path / "out1.mp4"), "-q", "--seed", "0", "--guard-candidates", "0"]) == 0
    assert "--seed, --guard-candidates: used in generate mode only" in caplog.text  # zero is a value too
    caplog.clear()
    assert main(["file", str(clip), str(tmp_path / "out2.mp4"), "-q", "--mode", "pixelate"]) == 0
    assert "generate mode only" not in caplog.text
