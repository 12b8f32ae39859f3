"""streamanon.metrics.coverage: how much of an annotated face the anonymization hides."""

from __future__ import annotations

import numpy as np
import pytest

from streamanon.config import ReplaceConfig
from streamanon.metrics.coverage import (
    change_window,
    changed_pixels,
    hidden_region,
    hidden_share,
    inner_face_mask,
    verdict,
)


def square_face(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """68 points whose inner face (17-67) fills the square (x1, y1)-(x2, y2); the jaw far off."""
    points = np.zeros((68, 2), np.float32)
    points[:17] = (-100.0, -100.0)  # the jaw line is not part of the inner face
    corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32)
    points[17:] = corners[np.arange(51) % 4]
    return points


def test_inner_face_ignores_the_jaw_line():
    mask = inner_face_mask(square_face(10, 10, 29, 29), 50, 50)
    assert mask[10:30, 10:30].all()
    assert mask.sum() == 400


def test_hidden_share_counts_the_covered_part_of_the_inner_face():
    face = square_face(10, 10, 29, 29)
    hidden = np.zeros((50, 50), bool)
    hidden[:, :20] = True  # the left half of the square
    assert hidden_share(hidden, face) == pytest.approx(0.5)
    hidden[:] = True
    assert hidden_share(hidden, face) == 1.0
    assert np.isnan(hidden_share(hidden, square_face(200, 200, 240, 240)))


def test_changed_pixels_leave_out_differences_of_two_levels_or_less():
    original = np.full((4, 4, 3), 100, np.uint8)
    anonymized = original.copy()
    anonymized[0, 0, 1] = 102  # within the tolerance: still the original
    anonymized[1, 1, 2] = 97  # 3 levels darker in one channel: changed
    changed = changed_pixels(original, anonymized)
    assert changed.sum() == 1 and changed[1, 1]
    with pytest.raises(ValueError, match="shape"):
        changed_pixels(original, original[:2])
    with pytest.raises(ValueError, match="odd"):
        changed_pixels(original, anonymized, window=4)


def test_a_window_counts_thin_crossings_as_changed_but_not_an_untouched_patch():
    """A replaced region crosses the original's values along thin lines; averaged over a window
    those count as changed, while a patch left as it was stays unchanged."""
    original = np.full((60, 60, 3), 100, np.uint8)
    anonymized = np.full((60, 60, 3), 120, np.uint8)
    anonymized[:, 30] = 100  # a one-pixel contour where the new face meets the old value
    anonymized[5:17, 5:17] = 100  # a 12 px patch still showing the original
    per_pixel = changed_pixels(original, anonymized)
    assert not per_pixel[:, 30].any()
    windowed = changed_pixels(original, anonymized, window=5)
    assert windowed[20:, 30].all()
    assert not windowed[9:13, 9:13].any()  # the patch's core, farther than the window from its edge
    face = np.zeros((68, 2))
    face[36], face[45] = (0, 0), (100, 0)
    assert change_window(face) == 11  # a tenth of the eye distance, odd


def test_hidden_region_covers_the_face_box_and_stops_before_the_far_corners():
    box = np.array([40, 30, 80, 90], np.float32)
    region = hidden_region([box], 160, 160, ReplaceConfig())
    assert region[30:91, 40:81].all()  # every pixel of the face box is replaced completely
    assert not region[0, 0] and not region[159, 159]
    assert not hidden_region([], 160, 160, ReplaceConfig()).any()


def test_verdicts():
    assert [verdict(s) for s in (1.0, 0.99, 0.7, 0.49, float("nan"))] == [
        "hidden", "hidden", "partly", "missed", "outside"
    ]  # fmt: skip


def turned_photo(relative: str, turns: int) -> tuple[np.ndarray, np.ndarray]:
    """A shared annotated photo and its 68 points, turned by ``turns`` quarter turns (np.rot90)."""
    from conftest import shared_path

    from streamanon.faces.landmarks import read_pts
    from streamanon.io.images import read_image

    path = shared_path(relative)
    image, points = read_image(path), read_pts(path.with_suffix(".pts"))
    for _ in range(turns):  # pixel centres: column x of width W lands on row W - 1 - x
        points = np.stack([points[:, 1], image.shape[1] - 1 - points[:, 0]], axis=1)
        image = np.rot90(image)
    return np.ascontiguousarray(image), points


@pytest.mark.parametrize("mode", ["solid", "generate"])
def test_faces_turned_sideways_are_hidden_with_all_rotations(mode):
    """A HELEN face on a photo turned by 90 degrees: upright-only detection leaves it visible
    (benchmarks/face_recall.py), ``detect.rotations`` = all hides (or generates) it."""
    from streamanon import Anonymizer, load_config
    from streamanon.types import Frame

    image, points = turned_photo("landmarks68/helen_test/3004312424_1.jpg", 1)
    shares = {}
    for rotations in ([0], [0, 90, 180, 270]):
        anonymizer = Anonymizer(load_config(overrides={"replace.mode": mode, "detect.rotations": rotations}))
        out, stats = anonymizer.process_frame(Frame(image, 0))
        shares[len(rotations)] = hidden_share(changed_pixels(image, out, window=change_window(points)), points)
        if len(rotations) == 4 and mode == "generate":
            assert stats.generated == 1  # a generated face, not the blur fallback
    assert shares[1] < 0.5, shares
    assert shares[4] >= 0.99, shares


def test_detect_rotations_option(capsys):
    from streamanon.cli import config_from_options, main
    from streamanon.config import load_config

    assert config_from_options({}).detect.rotations == (0,)
    assert config_from_options({"detect_rotations": (0, 90)}).detect.rotations == (0, 90)
    for bad in ("0,45", "up", "90,90", ""):
        code = main(["file", "in.mp4", "out.mp4", "--detect-rotations", bad])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "0,90,180,270" in err, (bad, err)
    code = main(["eval", "--detect-rotations", "45", __file__, __file__])  # eval takes the same angles
    err = capsys.readouterr().err.strip()
    assert code == 2 and "0,90,180,270" in err, err
    from streamanon.metrics.evaluate import EvalOptions, Models

    models = Models.load(EvalOptions(detect_rotations=(0, 180), hog=False, emotion=False))
    assert models.detector.turns == (0, 2)  # eval finds the original's faces at the same angles
    with pytest.raises(Exception, match="detect.rotations"):  # the same bound from a settings file
        load_config(overrides={"detect.rotations": [0, 45]})


def test_face_recall_benchmark_on_a_few_photos(tmp_path):
    """benchmarks/face_recall.py end to end on three HELEN photos, upright and turned by 90
    degrees, detecting at all rotations: every face hidden, the JSON complete."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import shared_path

    data = shared_path("landmarks68")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "face_recall.py"
    out = tmp_path / "recall.json"
    done = subprocess.run(
        [sys.executable, str(script), "--data", str(data), "--sets", "helen_test", "--limit", "3",
         "--conditions", "original,roll90", "--rotations", "0,90,180,270", "--out", str(out), "--all-faces"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = json.loads(out.read_text())["runs"]
    assert [run["condition"] for run in runs] == ["original", "roll90"]
    for run in runs:
        assert run["rotations"] == [0, 90, 180, 270]
        assert run["summary"]["all"]["all"] == {"faces": 3, "hidden": 3, "partly": 0, "missed": 0, "recall": 1.0}
        assert all(row["share"] >= 0.99 and row["faces_found"] >= 1 for row in run["faces"]["helen_test"])
        assert run["not_hidden"] == {"helen_test": []}
    assert "recall" in done.stdout


def _rolling_faces():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "rolling_faces.py"
    spec = importlib.util.spec_from_file_location("rolling_faces", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shrink", [1.0, 0.25])
def test_rolling_faces_turns_the_truth_with_the_frame(shrink):
    """The benchmark's ground truth lands on the pixels it marked, turned and shrunk onto the canvas."""
    rolling = _rolling_faces()
    image = np.zeros((200, 300, 3), np.uint8)
    points = np.array([[60.0, 50.0], [240.0, 150.0]])
    for x, y in points.astype(int):
        image[y - 4 : y + 5, x - 4 : x + 5] = 255
    turned, moved = rolling.turned(image, points, 37.0, shrink)
    assert turned.shape == ((200, 300, 3) if shrink == 1.0 else (720, 1280, 3))
    for x, y in moved:
        assert turned[int(round(y)), int(round(x))].max() > 100  # the marked square is there
    assert rolling.roll_of("spin", 50, 200) == 90.0 and rolling.roll_of("tilt", 0, 200) == 0.0
    assert abs(rolling.roll_of("tilt", 25, 200)) == pytest.approx(rolling.TILT_DEGREES)


def test_rolling_faces_benchmark_on_a_short_clip(tmp_path):
    """benchmarks/rolling_faces.py end to end on one GRID clip tilting: every frame judged, JSON complete."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from conftest import shared_path

    clip = shared_path("videos/grid_speaker_00.mpg")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "rolling_faces.py"
    out = tmp_path / "rolling.json"
    done = subprocess.run(
        [sys.executable, str(script), "--videos", str(clip.parent), "--clips", clip.name, "--motions", "tilt",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["clip"] == clip.name and row["motion"] == "tilt" and row["frames"] == 75
    assert row["hidden"] + row["partly"] + row["missed"] == row["frames"]
    assert row["hidden"] == 75  # a speaker tilting +-75 degrees stays hidden
    bad = subprocess.run([sys.executable, str(script), "--motions", "roll"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--motions takes spin and/or tilt" in bad.stderr
