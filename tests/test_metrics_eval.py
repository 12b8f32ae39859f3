"""Planted truths for `streamanon eval` on short real clips and ground-truth photos.

Derived clips are written losslessly (FFV1, RGB) so that the only difference between the
original and the "anonymized" clip is the one each test plants.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared_path

from streamanon.errors import UserError
from streamanon.metrics.evaluate import EvalOptions, Models, evaluate_pair

FRAMES = 6  # enough for tracking and temporal pairs; each frame costs ~1 s of CPU


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """Encode RGB frames losslessly (FFV1 in Matroska, bgr0: no chroma subsampling)."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    h, w = frames[0].shape[:2]
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "ffv1", "-pix_fmt", "bgr0", str(path),
    ]
    subprocess.run(cmd, input=np.stack(frames).tobytes(), check=True)
    return path


@pytest.fixture(scope="module")
def grid_frames() -> list[np.ndarray]:
    from streamanon.io.video import VideoReader

    with VideoReader(shared_path("videos/grid_speaker_00.mpg")) as reader:
        return [frame.image for _, frame in zip(range(FRAMES), reader)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def original(grid_frames, workdir) -> Path:
    return write_clip(workdir / "original.mkv", grid_frames)


@pytest.fixture(scope="module")
def models() -> Models:
    return Models.load(EvalOptions())


def _evaluate(original: Path, frames: list[np.ndarray], name: str, workdir: Path, models: Models) -> dict:
    anonymized = write_clip(workdir / f"{name}.mkv", frames)
    report, _ = evaluate_pair(original, anonymized, EvalOptions(), models)
    return report


def _mean(report: dict, name: str) -> float:
    return report["metrics"][name]["mean"]


def test_clip_against_itself(original, grid_frames, workdir, models):
    report = _evaluate(original, grid_frames, "same", workdir, models)
    assert report["kind"] == "video" and report["frames"] == FRAMES and report["faces"] == FRAMES
    assert report["tracks"] == 1
    assert _mean(report, "reid") == 1.0
    assert _mean(report, "cosine") == pytest.approx(1.0)
    assert _mean(report, "pose_nme") == 0.0 and _mean(report, "expression_nme") == 0.0
    assert _mean(report, "delta_E") == pytest.approx(0.0, abs=1e-9)
    assert _mean(report, "si_mse") == pytest.approx(0.0, abs=1e-12)
    assert _mean(report, "detail_ratio") == pytest.approx(1.0)
    assert _mean(report, "detected_ours") == 1.0 and _mean(report, "detected_hog") == 1.0
    assert _mean(report, "detected_hog_original") == 1.0
    if models.emotion is not None:
        assert _mean(report, "emotion_agree") == 1.0
    temporal = report["temporal"]
    assert temporal["pairs"] == FRAMES - 1
    assert temporal["jitter_ratio"] == pytest.approx(1.0) and temporal["flicker_ratio"] == pytest.approx(1.0)
    assert temporal["identity_switch_frames"] == []
    assert report["realism"]["frechet_embedding"] == pytest.approx(0.0, abs=1e-6)
    # Every frame shows the same face: every frame is a leak.
    assert report["coverage"]["leak_frames"] == list(range(FRAMES))
    json.dumps(report, allow_nan=False)  # JSON-ready: no NaN, no numpy types


def test_another_speaker_from_mid_clip_is_one_identity_switch(original, grid_frames, workdir, models):
    """The second half of the "anonymized" clip shows another GRID speaker (framed alike): one switch,
    at the first frame of that half; the clip against itself has none (test above)."""
    from streamanon.io.video import VideoReader

    with VideoReader(shared_path("videos/grid_speaker_01.mpg")) as reader:
        other = [frame.image for _, frame in zip(range(FRAMES), reader)]
    half = FRAMES // 2
    report = _evaluate(original, grid_frames[:half] + other[half:], "switch", workdir, models)
    assert report["tracks"] == 1 and report["temporal"]["identity_switch_frames"] == [half]


def test_colour_shift_raises_delta_e_not_nme(original, grid_frames, workdir, models):
    warmer = [np.clip(f * np.array([1.12, 1.0, 0.85]), 0, 255).astype(np.uint8) for f in grid_frames]
    report = _evaluate(original, warmer, "warm", workdir, models)
    assert _mean(report, "delta_E") > 2.0 and _mean(report, "delta_C") > 2.0
    assert _mean(report, "pose_nme") < 0.02 and _mean(report, "expression_nme") < 0.02
    assert _mean(report, "reid") == 1.0  # a colour cast hides nobody


def test_blur_lowers_detection_and_reidentification(original, grid_frames, workdir, models):
    blurred = [cv2.GaussianBlur(f, (0, 0), 20) for f in grid_frames]
    report = _evaluate(original, blurred, "blur", workdir, models)
    assert _mean(report, "detected_hog") < 0.5 < _mean(report, "detected_hog_original")
    assert _mean(report, "reid") < 0.5
    assert _mean(report, "distance") > 0.6
    assert len(report["coverage"]["leak_frames"]) < FRAMES / 2
    assert _mean(report, "detail_ratio") < 0.1  # the blur left no fine structure


def test_leak_in_one_frame_is_reported_there(original, grid_frames, workdir, models):
    leak_at = 4
    hidden = []
    for i, frame in enumerate(grid_frames):
        out = frame.copy()
        if i != leak_at:
            for x1, y1, x2, y2 in models.detector(frame).boxes.astype(int):
                out[max(0, y1 - 10) : y2 + 10, max(0, x1 - 10) : x2 + 10] = 128
        hidden.append(out)
    report = _evaluate(original, hidden, "leak", workdir, models)
    assert report["coverage"]["leak_frames"] == [leak_at]
    assert [l["frame"] for l in report["coverage"]["leaks"]] == [leak_at]
    assert report["worst"][0]["frame"] == leak_at  # the most re-identifiable face comes first


def test_translation_raises_nme_by_shift_over_iod(tmp_path, models):
    """Ground-truth photos (folder mode): a face moved by t px scores NME ~ t / IOD."""
    shift = 6.0
    originals, moved = tmp_path / "orig", tmp_path / "moved"
    originals.mkdir()
    moved.mkdir()
    # Single-face photos: small background faces get landmarks too unstable to test against.
    names = ["2968560214_1.jpg", "2968784797_1.jpg", "2971848745_1.jpg"]
    matrix = np.float32([[1, 0, shift], [0, 1, 0]])
    for name in names:
        image = cv2.imread(str(shared_path(f"landmarks68/helen_test/{name}")))
        cv2.imwrite(str(originals / (Path(name).stem + ".png")), image)
        shifted = cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)
        cv2.imwrite(str(moved / (Path(name).stem + ".png")), shifted)
    same, _ = evaluate_pair(originals, originals, EvalOptions(), models)
    report, _ = evaluate_pair(originals, moved, EvalOptions(), models)
    assert report["kind"] == "images" and report["temporal"] is None and report["faces"] == len(names)
    assert _mean(same, "pose_nme") == 0.0
    # The detector finds the moved face and the predictor is placed there, so the landmarks
    # follow the shift; the rest is dlib's own sub-pixel noise.
    for track in report["tracks_detail"]:
        expected = shift / track["inter_ocular_px"]["mean"]
        assert 0.75 * expected < track["metrics"]["pose_nme"]["mean"] < 1.35 * expected, track


def test_mismatched_inputs_are_user_errors(original, grid_frames, workdir, models, tmp_path):
    shorter = write_clip(workdir / "short.mkv", grid_frames[:3])
    with pytest.raises(UserError, match="frame counts differ"):
        evaluate_pair(original, shorter, EvalOptions(), models)
    small = write_clip(workdir / "small.mkv", [cv2.resize(f, (180, 144)) for f in grid_frames])
    with pytest.raises(UserError, match="original is 360x288"):
        evaluate_pair(original, small, EvalOptions(), models)
    with pytest.raises(UserError, match="video with a video"):
        evaluate_pair(original, tmp_path, EvalOptions(), models)


def test_eval_command_with_baseline(original, workdir, tmp_path):
    pytest.importorskip("streamanon.pipeline")
    from streamanon.metrics.cli import eval_command

    json_path, html_path = tmp_path / "eval.json", tmp_path / "eval.html"
    result = CliRunner().invoke(
        eval_command,
        [str(original), str(original), "--json", str(json_path), "--report", str(html_path),
         "--baselines", "blur", "--max-frames", "4"],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    doc = json.loads(json_path.read_text())
    assert doc["schema"] == "streamanon.eval/1"
    labels = [row["label"] for row in doc["rows"]]
    assert labels == ["anonymized", "blur"]
    same, blur = doc["rows"]
    assert same["metrics"]["reid"]["mean"] == 1.0
    assert blur["metrics"]["reid"]["mean"] < same["metrics"]["reid"]["mean"]
    assert "Re-identification rate" in result.output and "blur" in result.output
    html = html_path.read_text()
    assert "<svg" in html and "data:image/jpeg;base64," in html
    bad = CliRunner().invoke(eval_command, [str(original), str(original), "--baselines", "sepia"])
    assert bad.exit_code == 2 and "unknown baseline 'sepia'" in bad.output  # a usage error, as the README says


def test_fid_is_computed_when_weights_are_given(original, models, tmp_path):
    """Real loading path with a stand-in file (random weights, same layout as the official one)."""
    torch = pytest.importorskip("torch")
    from dataclasses import replace

    from streamanon.metrics.fid import _build_inception

    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(_build_inception().state_dict(), weights)
    options = replace(EvalOptions(), max_frames=3, inception_weights=str(weights))
    report, _ = evaluate_pair(original, original, options, models)
    fid = report["realism"]["fid"]
    assert fid["status"] == "ok" and fid["faces"] == 3
    assert fid["value"] == pytest.approx(0.0, abs=1e-3)  # identical face sets
    # Without weights (and none cached) it says so instead of guessing.
    assert _without_weights(original, models, tmp_path)["status"] == "unavailable"


def _without_weights(original, models, tmp_path) -> dict:
    import os
    from dataclasses import replace

    saved = {k: os.environ.get(k) for k in ("STREAMANON_MODELS", "TORCH_HOME")}
    os.environ["STREAMANON_MODELS"] = str(tmp_path / "none")
    os.environ["TORCH_HOME"] = str(tmp_path / "none")
    try:
        report, _ = evaluate_pair(original, original, replace(EvalOptions(), max_frames=2), models)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return report["realism"]["fid"]


def test_eval_output_paths_are_checked_before_evaluating(tmp_path, capsys):
    """A --json/--report path that cannot be written fails in one line before any model loads or frame
    is read (the inputs here are not even videos: evaluating them first would fail differently)."""
    import os

    from streamanon.cli import main

    original, anonymized = tmp_path / "original.mkv", tmp_path / "anonymized.mkv"
    original.write_bytes(b"not a video")
    anonymized.write_bytes(b"not a video either")
    missing = tmp_path / "missing_dir"
    cases = [
        (["--json", missing / "x.json"], "output folder does not exist"),
        (["--report", missing / "x.html"], "output folder does not exist"),
        (["--report", original], "would overwrite the input"),
        (["--json", tmp_path / "x.json", "--report", tmp_path / "x.json"], "name the same file"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        cases.append((["--json", locked / "x.json"], "not writable"))
    for extra, message in cases:
        code = main(["eval", str(original), str(anonymized), *map(str, extra), "-q"])
        err = capsys.readouterr().err
        assert code == 1 and message in err, (extra, err)
        assert err.count("\n") == 1 and "internal error" not in err, err
    # A folder given as the file is refused by the command line itself.
    code = main(["eval", str(original), str(anonymized), "--json", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "is a directory" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "locked") == ["anonymized.mkv", "original.mkv"]
    assert original.read_bytes() == b"not a video"
    # A video against an image: said as such, not as an image that cannot be decoded.
    photo = tmp_path / "anonymized.png"
    photo.write_bytes(b"")
    code = main(["eval", str(original), str(photo), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "anonymized.png is an image and original.mkv is not" in err, err


def test_eval_outputs_are_written_atomically(tmp_path):
    from streamanon.metrics.cli import _write_atomically

    target = tmp_path / "eval.json"
    target.write_text("previous run\n")

    def fails_midway(tmp: Path) -> None:
        tmp.write_text('{"half": ')
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match="cannot write .*No space left"):
        _write_atomically(target, fails_midway)
    assert target.read_text() == "previous run\n" and [p.name for p in tmp_path.iterdir()] == ["eval.json"]
    _write_atomically(target, lambda tmp: tmp.write_text("{}\n"))
    assert target.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_folders_of_frames_are_measured_as_sequences(grid_frames, models, tmp_path):
    """eval --sequence: each folder of frames is one camera's clip (tracked, temporal figures); a
    second folder starts its own tracks. The same speaker switched for another in the second
    folder's second half is that folder's identity switch."""
    from streamanon.io.images import write_image
    from streamanon.io.video import VideoReader

    with VideoReader(shared_path("videos/grid_speaker_01.mpg")) as reader:
        other = [frame.image for _, frame in zip(range(FRAMES), reader)]
    half = FRAMES // 2
    for side, second in (("orig", grid_frames), ("anon", grid_frames[:half] + other[half:])):
        (tmp_path / side / "a").mkdir(parents=True)
        (tmp_path / side / "b").mkdir()
        for i in range(FRAMES):
            write_image(tmp_path / side / "a" / f"f{i}.png", grid_frames[i])  # natural order: f2 before f10
            write_image(tmp_path / side / "b" / f"f{i}.png", second[i])
    options = EvalOptions(sequence_fps=25.0)
    report, _ = evaluate_pair(tmp_path / "orig", tmp_path / "anon", options, models)
    assert report["kind"] == "video" and report["frames"] == 2 * FRAMES and report["tracks"] == 2
    temporal = report["temporal"]
    assert temporal["pairs"] == 2 * (FRAMES - 1)  # no pair across the two folders
    assert temporal["identity_switch_frames"] == [FRAMES + half]
    photos, _ = evaluate_pair(tmp_path / "orig", tmp_path / "anon", EvalOptions(), models)
    assert photos["kind"] == "images" and photos["temporal"] is None
    (tmp_path / "anon" / "b" / "f3.png").unlink()
    with pytest.raises(UserError, match="no counterpart"):
        evaluate_pair(tmp_path / "orig", tmp_path / "anon", options, models)


def test_eval_sequence_options_are_checked(original, tmp_path):
    from streamanon.metrics.cli import eval_command

    no_sequence = CliRunner().invoke(eval_command, [str(original), str(original), "--fps", "25"])
    assert no_sequence.exit_code == 2 and "--fps is the frame rate of a --sequence" in no_sequence.output
    videos = CliRunner().invoke(eval_command, [str(original), str(original), "--sequence"])
    assert isinstance(videos.exception, UserError) and "two folders of video frames" in str(videos.exception)
