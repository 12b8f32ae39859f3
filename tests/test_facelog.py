"""The faces log (``streamanon file --faces-log``): one JSON line per frame saying what was hidden where."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path

from streamanon.bench.scenes import trim_clip
from streamanon.cli import main
from streamanon.errors import UserError
from streamanon.facelog import read_faces_log
from streamanon.files import anonymize_file
from streamanon.io.video import VideoReader
from streamanon.pipeline import Anonymizer

FRAMES = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    short, count = trim_clip(shared_path("videos/talking_512_katiehill.mp4"), FRAMES,
                             tmp_path_factory.mktemp("clip") / "talk.mp4")  # fmt: skip
    assert count == FRAMES
    return short


def _changed(before: np.ndarray, after: np.ndarray, box: list[float]) -> float:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return float(np.abs(after[y1:y2, x1:x2].astype(int) - before[y1:y2, x1:x2]).mean())


def test_generate_mode_logs_each_frame_s_face_its_box_and_the_landmarks_it_was_given(clip, tmp_path):
    out, log = tmp_path / "out.mp4", tmp_path / "faces.jsonl"
    assert main(["file", str(clip), str(out), "--mode", "generate", "--faces-log", str(log), "-q"]) == 0
    records = read_faces_log(log)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [r["time"] for r in records] == pytest.approx([i / 25 for i in range(FRAMES)])
    with VideoReader(clip) as a, VideoReader(out) as b:
        pairs = [(x.image, y.image) for x, y in zip(a, b)]
    for record, (before, after) in zip(records, pairs):
        assert record["source"] == "talk.mp4" and len(record["faces"]) == 1
        face = record["faces"][0]
        assert (face["track"], face["detected"], face["how"], face["fallback"]) == (1, True, "generated", False)
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512 and x2 - x1 > 150  # the close-up face
        points = np.array(face["landmarks"])
        assert points.shape == (68, 2)
        assert (points[:, 0] > x1 - 20).all() and (points[:, 0] < x2 + 20).all()  # on the face
        assert (points[:, 1] > y1 - 20).all() and (points[:, 1] < y2 + 20).all()
        assert _changed(before, after, face["box"]) > 5, "the logged region is the one replaced"


def test_a_folder_run_logs_each_source_and_drops_the_frames_of_a_video_that_failed(clip, tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "b").mkdir(parents=True)
    for name in ("a.mp4", "b/c.mp4", "d.mp4"):
        (src / name).write_bytes(clip.read_bytes())
    log = tmp_path / "faces.jsonl"
    process_frame = Anonymizer.process_frame
    calls = {"n": 0}

    def fails_in_the_second_video(self, frame, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == FRAMES + 5:  # frame 4 of the second video (b/c.mp4)
            raise UserError("injected failure")
        return process_frame(self, frame, *args, **kwargs)

    monkeypatch.setattr(Anonymizer, "process_frame", fails_in_the_second_video)
    with pytest.raises(UserError, match="1 of 3 videos failed"):
        anonymize_file(src, tmp_path / "out", faces_log=log)
    records = read_faces_log(log)  # kept although a file failed: it holds the ones done
    assert [(r["source"], r["frame"]) for r in records] == [("a.mp4", i) for i in range(FRAMES)] + [
        ("d.mp4", i) for i in range(FRAMES)
    ]  # fmt: skip
    assert all(r["faces"][0]["track"] == 1 for r in records), "track ids start anew in each video"
    assert not (tmp_path / "out" / "b").exists()


def test_the_log_is_checked_first_and_left_only_by_a_finished_run(clip, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.mp4"
    existing = tmp_path / "old.jsonl"
    existing.write_text("previous\n")
    for log, message in ((existing, "faces log exists"), (out, "file of its own"), (clip, "file of its own"),
                         (tmp_path, "not a folder"), (tmp_path / "missing" / "f.jsonl", "does not exist")):  # fmt: skip
        assert main(["file", str(clip), str(out), "-q", "--faces-log", str(log)]) == 1
        assert message in capsys.readouterr().err, log
    assert existing.read_text() == "previous\n" and not out.exists()

    def interrupted(self, frame, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Anonymizer, "process_frame", interrupted)
    assert main(["file", str(clip), str(out), "-q", "--faces-log", str(tmp_path / "new.jsonl")]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl"], "no log, no output, no temporary file"
