"""File jobs over folders of videos and photos (``streamanon file FOLDER OUT``), and resuming them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from streamanon.bench.scenes import trim_clip
from streamanon.cli import main
from streamanon.errors import UserError
from streamanon.files import anonymize_file
from streamanon.io.images import read_image, write_image
from streamanon.io.video import VideoReader

FRAMES = 12


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """The first 12 frames of two talking-head clips (one face each, two different people)."""
    folder = tmp_path_factory.mktemp("clips")
    made = []
    for name in ("katiehill", "alexandriaocasiocortez"):
        short, count = trim_clip(shared_path(f"videos/talking_512_{name}.mp4"), FRAMES, folder / f"{name}.mp4")
        assert count == FRAMES
        made.append(short)
    return made[0], made[1]


def _frames(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [frame.image for frame in reader]


def _recordings(root: Path, clips: tuple[Path, Path]) -> Path:
    """day1/cab.mp4, day2/yard.mkv (another container), a photo, a broken video, a text file and
    a hidden folder's video, as a team's folder of recordings would hold them."""
    src = root / "recordings"
    for relative, clip in (("day1/cab.mp4", clips[0]), ("day2/yard.mkv", clips[1]), (".trash/old.mp4", clips[0])):
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        (src / relative).write_bytes(clip.read_bytes())
    write_image(src / "day1" / "still.png", _frames(clips[1])[0])
    (src / "day2" / "broken.mp4").write_bytes(clips[0].read_bytes()[:3000])  # cut off inside its header
    (src / "notes.txt").write_text("not a video\n")
    (src / "day2" / "wave.gif").write_bytes(b"GIF89a")  # only alone, into a video: named as left out
    return src


def test_a_folder_of_videos_mirrors_the_tree_each_video_its_own_clip(clips, tmp_path, capsys):
    """Every video and photo under the folder is anonymized to the same relative path; a broken
    video costs only itself (one line, exit 1 at the end); other files and hidden folders are left."""
    src, dst = _recordings(tmp_path, clips), tmp_path / "anon"
    code = main(["file", str(src), str(dst)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("streamanon: day1/cab.mp4: 12 frames, 12 faces, 1 tracks"), err
    assert lines[1].startswith("streamanon: skipped:") and str(src / "day2" / "broken.mp4") in lines[1]
    assert lines[2].startswith("streamanon: day2/yard.mkv: 12 frames, 12 faces, 1 tracks"), err
    assert lines[3] == ("streamanon: left out 2 file(s) that are neither images nor videos by extension: "
                        "day2/wave.gif, notes.txt")  # fmt: skip
    assert lines[4] == f"streamanon: error: 1 of 4 files failed (each named above), 3 anonymized into {dst}"
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == [
        "day1/cab.mp4", "day1/still.png", "day2/yard.mkv",
    ]  # fmt: skip
    for relative, clip in (("day1/cab.mp4", clips[0]), ("day2/yard.mkv", clips[1])):
        original, anonymized = _frames(clip), _frames(dst / relative)
        assert len(anonymized) == FRAMES
        # The face (centre of the close-up) is hidden in every frame; the corners are the scene's.
        for before, after in zip(original, anonymized):
            assert np.abs(after[160:352, 160:352].astype(int) - before[160:352, 160:352]).mean() > 5
            assert np.abs(after[:48, :48].astype(int) - before[:48, :48]).mean() < 3
    assert np.abs(read_image(dst / "day1" / "still.png")[160:352, 160:352].astype(int)
                  - _frames(clips[1])[0][160:352, 160:352]).mean() > 5  # fmt: skip


def test_the_summary_counts_tracks_per_video(clips, tmp_path):
    """Track ids restart in each video: two one-face clips are two tracks, not one."""
    src = tmp_path / "src"
    src.mkdir()
    for i, clip in enumerate(clips):
        (src / f"{i}.mp4").write_bytes(clip.read_bytes())
    summary = anonymize_file(src, tmp_path / "out")
    assert (summary.frames, summary.faces, summary.tracks, summary.videos) == (2 * FRAMES, 2 * FRAMES, 2, 2)
    assert summary.line().startswith("24 frames, 2 videos, 24 faces, 2 tracks")


def test_skip_existing_resumes_a_folder_and_leaves_outputs_alone(clips, tmp_path, capsys):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "one.mp4").write_bytes(clips[0].read_bytes())
    (src / "two.mp4").write_bytes(clips[1].read_bytes())
    dst = tmp_path / "out"
    (dst / "a").mkdir(parents=True)
    done_before = b"an output from an earlier run"  # not a video: it is left, not read
    (dst / "a" / "one.mp4").write_bytes(done_before)

    # A folder that is not empty needs --overwrite or --skip-existing, and the two exclude each other.
    assert main(["file", str(src), str(dst), "-q"]) == 1
    assert "--skip-existing" in capsys.readouterr().err
    assert main(["file", str(src), str(dst), "--overwrite", "--skip-existing"]) == 2
    assert "choose one" in capsys.readouterr().err

    assert main(["file", str(src), str(dst), "--skip-existing"]) == 0
    err = capsys.readouterr().err
    assert (dst / "a" / "one.mp4").read_bytes() == done_before
    assert len(_frames(dst / "two.mp4")) == FRAMES
    assert "two.mp4: 12 frames" in err and "1 skipped (output exists)" in err.splitlines()[-1]

    stamp = (dst / "two.mp4").stat().st_mtime_ns
    assert main(["file", str(src), str(dst), "--skip-existing"]) == 0
    assert "nothing to do, all 2 outputs exist" in capsys.readouterr().err
    assert (dst / "two.mp4").stat().st_mtime_ns == stamp


def test_skip_existing_for_one_file(clips, tmp_path, capsys):
    """An existing output is left and the run succeeds; every other check still applies."""
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"done before")
    assert main(["file", str(clips[0]), str(dst), "--skip-existing"]) == 0
    assert capsys.readouterr().err.strip() == f"streamanon: nothing to do, output exists -> {dst}"
    assert dst.read_bytes() == b"done before"
    with pytest.raises(UserError, match="input not found"):
        anonymize_file(tmp_path / "missing.mp4", dst, skip_existing=True)
    with pytest.raises(UserError, match="needs a video extension"):
        image_out = tmp_path / "frame.png"
        image_out.write_bytes(b"x")
        anonymize_file(clips[0], image_out, skip_existing=True)


def test_skip_existing_in_a_sequence_still_tracks_through_frames_done_before(tmp_path):
    """A frame of a sequence whose output exists is left alone but still seen, so the next frames'
    faces are tracked as in a full run: the same tracks, the same outputs."""
    src, full, resumed = tmp_path / "frames", tmp_path / "full", tmp_path / "resumed"
    src.mkdir()
    clip, _ = trim_clip(shared_path("videos/talking_512_katiehill.mp4"), 6, tmp_path / "six.mp4")
    for i, image in enumerate(_frames(clip)):
        write_image(src / f"{i}.png", image)
    first = anonymize_file(src, full, sequence_fps=25.0)
    resumed.mkdir()
    for name in ("0.png", "1.png", "2.png"):
        (resumed / name).write_bytes(b"done before")
    again = anonymize_file(src, resumed, sequence_fps=25.0, skip_existing=True)
    assert first.frames == 6 and (again.frames, again.skipped) == (3, 3)
    assert (resumed / "0.png").read_bytes() == b"done before"
    for name in ("3.png", "4.png", "5.png"):
        assert np.array_equal(read_image(resumed / name), read_image(full / name)), name


def test_an_output_folder_that_holds_the_input_folder_is_refused(clips, tmp_path, capsys):
    """src = t/a, dst = t: t/a/a/x.png's output would be t/a/x.png, an input not yet read."""
    src = tmp_path / "a"
    (src / "a").mkdir(parents=True)
    frame = _frames(clips[0])[0]
    write_image(src / "x.png", frame)
    write_image(src / "a" / "x.png", frame[::-1].copy())
    before = {p: p.read_bytes() for p in src.rglob("*.png")}
    assert main(["file", str(src), str(tmp_path), "--overwrite"]) == 1
    assert "must not hold the input folder" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == before


def test_a_video_that_fails_leaves_no_empty_folder_behind(clips, tmp_path):
    """The output's folder is made for it, and taken back when the video fails (or is interrupted)."""
    src, dst = tmp_path / "src", tmp_path / "out"
    (src / "good").mkdir(parents=True)
    (src / "bad" / "deeper").mkdir(parents=True)
    (src / "good" / "a.mp4").write_bytes(clips[0].read_bytes())
    (src / "bad" / "deeper" / "b.mp4").write_bytes(b"not a video")
    with pytest.raises(UserError, match="1 of 2 videos failed"):
        anonymize_file(src, dst)
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == ["good", "good/a.mp4"]


def test_a_resumed_sequence_counts_a_frame_that_fails_as_failed_not_also_as_skipped(clips, tmp_path):
    src, dst = tmp_path / "frames", tmp_path / "out"
    src.mkdir()
    for i, image in enumerate(_frames(clips[0])[:3]):
        write_image(src / f"{i}.png", image)
    (src / "1.png").write_bytes(b"broken")  # its output is there from an earlier run, its input is not readable
    dst.mkdir()
    (dst / "1.png").write_bytes(b"done before")
    with pytest.raises(UserError, match=r"1 of 3 images failed \(each named above\), 2 anonymized into"):
        anonymize_file(src, dst, sequence_fps=25.0, skip_existing=True)
    assert sorted(p.name for p in dst.iterdir()) == ["0.png", "1.png", "2.png"]
