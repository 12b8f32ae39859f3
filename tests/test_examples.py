"""The scripts in examples/ run as their docstrings say, on a short real clip."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_path

from streamanon.bench.scenes import trim_clip
from streamanon.io.video import VideoReader

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The first 12 frames (0.5 s) of a talking-head clip: one face."""
    source = shared_path("videos/talking_512_katiehill.mp4")
    short, count = trim_clip(source, 12, tmp_path_factory.mktemp("clip") / "talking.mp4")
    assert count == 12
    return short


def _run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def _frames(path: Path) -> int:
    with VideoReader(path) as reader:
        return sum(1 for _ in reader)


def test_python_api_example(clip, tmp_path):
    done = _run("python_api.py", clip, tmp_path / "out.mp4")
    assert done.returncode == 0, done.stderr
    assert "1 tracks" in done.stdout and "first frame anonymized: (512, 512, 3) uint8" in done.stdout
    assert _frames(tmp_path / "out.mp4") == 12


def test_batch_folder_example_mirrors_the_tree_resumes_and_reports_failures(clip, tmp_path):
    src, dst = tmp_path / "recordings", tmp_path / "anon"
    for relative in ("day1/cam_a.mp4", "day2/cam_b.mov", ".trash/old.mp4"):
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        (src / relative).write_bytes(clip.read_bytes())
    (src / "day2" / "broken.mp4").write_bytes(b"not a video")
    (src / "notes.txt").write_text("not a video either")

    first = _run("batch_folder.py", src, dst)
    assert first.returncode == 1  # one file failed...
    assert "broken.mp4" in first.stderr and "Traceback" not in first.stderr
    assert "1 of 3 videos failed (each named above), 2 anonymized" in first.stderr
    assert "day1/cam_a.mp4: 12 frames" in first.stdout and "day2/cam_b.mov: 12 frames" in first.stdout
    assert _frames(dst / "day1" / "cam_a.mp4") == 12 and _frames(dst / "day2" / "cam_b.mov") == 12
    assert not (dst / ".trash").exists() and not (dst / "notes.txt").exists()
    assert sorted(p.name for p in dst.rglob("*") if p.is_file()) == ["cam_a.mp4", "cam_b.mov"]  # no temporaries

    again = _run("batch_folder.py", src, dst)  # ...and a second run only retries it
    assert again.returncode == 1 and "0 anonymized" in again.stderr
    assert "2 there before left as they were" in again.stderr
    (src / "day2" / "broken.mp4").unlink()
    assert "nothing to do, all 2 outputs exist" in _run("batch_folder.py", src, dst).stdout
    missing = _run("batch_folder.py", tmp_path / "missing", dst)
    assert missing.returncode == 1 and "input not found" in missing.stderr


def test_camera_to_file_example_records_a_live_source(clip, tmp_path):
    """A file played at its own rate stands in for the camera; the recording ends with the source."""
    done = _run("camera_to_file.py", clip, tmp_path / "cabin.mp4", "--seconds", 30)
    assert done.returncode == 0, done.stderr
    match = re.search(r"stream ended \(.*\): 12 frames in, (\d+) out, (\d+) dropped", done.stdout)
    assert match and "1 track" in done.stdout, done.stdout
    # Realtime: frames that arrive while the first ones are still being processed are dropped.
    sent, dropped = int(match.group(1)), int(match.group(2))
    assert sent + dropped == 12 and sent >= 1 and _frames(tmp_path / "cabin.mp4") == sent
    missing = _run("camera_to_file.py", tmp_path / "no_such_camera.mp4", tmp_path / "x.mp4")
    assert missing.returncode == 1 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr
