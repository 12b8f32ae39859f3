"""Generate mode end to end with the shipped generator weights, on a real talking-head clip (CPU)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import shared_path  # noqa: E402

from streamanon import Anonymizer, AnonymizerConfig  # noqa: E402
from streamanon.errors import UserError  # noqa: E402
from streamanon.faces.embed import FaceEmbedder  # noqa: E402
from streamanon.metrics.landmarks import pose_nme  # noqa: E402
from streamanon.types import Frame  # noqa: E402

FRAMES = 4


@pytest.fixture(scope="module")
def frames():
    import av

    path = shared_path("videos/talking_512_katiehill.mp4")
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(FRAMES), container.decode(video=0))]


def _run(frames, overrides: dict) -> tuple[list[np.ndarray], list, Anonymizer]:
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides({"replace.mode": "generate", **overrides}))
    outputs, stats = [], []
    for i, image in enumerate(frames):
        out, st = anonymizer.process_frame(Frame(image, i))
        outputs.append(out)
        stats.append(st)
    return outputs, stats, anonymizer


@pytest.fixture(scope="module")
def generated(frames):
    return _run(frames, {})


def _face_landmarks(anonymizer: Anonymizer, image: np.ndarray) -> np.ndarray:
    found = anonymizer.detector(image)
    assert len(found) == 1
    return anonymizer.landmarks.predict(image, found.boxes, found.keypoints)[0]


def test_face_is_replaced_by_a_new_identity_with_the_same_landmarks(frames, generated):
    outputs, stats, anonymizer = generated
    assert [s.generated for s in stats] == [1] * FRAMES and all(s.fallback == 0 for s in stats)
    original, output = frames[0], outputs[0]
    before = _face_landmarks(anonymizer, original)
    after = _face_landmarks(anonymizer, output)  # the new face is found and landmarked again
    assert pose_nme(before, after) < 0.08
    lo, hi = before.min(0).astype(int), before.max(0).astype(int)
    inner = (slice(lo[1] + 10, hi[1] - 10), slice(lo[0] + 10, hi[0] - 10))
    assert np.abs(output[inner].astype(int) - original[inner]).mean() > 8
    # Far from the face (top-left corner) nothing changes.
    assert np.array_equal(output[:60, :60], original[:60, :60])
    embedder = FaceEmbedder()
    distance = np.linalg.norm(embedder.embed(output, after) - embedder.embed(original, before))
    assert distance >= 0.6  # the identity guard's promise, checked with the attacker's own landmarks


def test_the_track_keeps_one_identity(generated):
    outputs, stats, anonymizer = generated
    assert len({tuple(s.track_ids) for s in stats}) == 1
    embedder = FaceEmbedder()
    vectors = [embedder.embed(out, _face_landmarks(anonymizer, out)) for out in outputs]
    cosines = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(vectors, vectors[1:])]
    assert min(cosines) >= 0.9
    (choice,) = anonymizer.identities.choices.values()
    assert choice.safe and choice.tried >= 1


def test_a_face_the_guard_refuses_is_blurred_like_blur_mode(frames):
    # No candidate can be 1.99 away in dlib's space: the guard refuses, the face must be hidden.
    outputs, stats, _ = _run(frames[:2], {"generate.guard_distance": 1.99, "generate.guard_candidates": 2})
    assert [s.generated for s in stats] == [0, 0] and [s.fallback for s in stats] == [1, 1]
    blur = Anonymizer(AnonymizerConfig().with_overrides({"replace.mode": "blur"}))
    for i, image in enumerate(frames[:2]):
        expected, _ = blur.process_frame(Frame(image, i))
        assert np.array_equal(outputs[i], expected)


def test_a_face_whose_landmarks_miss_it_is_blurred_like_blur_mode(frames):
    """Landmarks a face away from the detection (a predictor failure) would paste the generated
    face beside the real one: the face is hidden instead, and a face whose points fit is not."""
    settings = {"replace.mode": "generate", "generate.guard_candidates": 0}
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(settings))
    predict = anonymizer.landmarks.predict

    def shifted(image, boxes, keypoints=None, frame=None):
        points = predict(image, boxes, keypoints, frame=frame)
        return points + [[[boxes[0, 2] - boxes[0, 0], 0.0]]]  # one face width to the right

    anonymizer.landmarks.predict = shifted
    blur = Anonymizer(AnonymizerConfig().with_overrides({"replace.mode": "blur"}))
    for i, image in enumerate(frames[:2]):
        out, stats = anonymizer.process_frame(Frame(image, i))
        assert stats.generated == 0 and stats.fallback == 1
        assert np.array_equal(out, blur.process_frame(Frame(image, i))[0])
    # The landmarks the predictor gives do fit (IoU with the box well above the bound).
    from streamanon.faces.landmarks import landmarks_fit_boxes

    found = anonymizer.detector(frames[0])
    points = predict(frames[0], found.boxes, found.keypoints)
    assert landmarks_fit_boxes(points, found.boxes).all()
    assert not landmarks_fit_boxes(points + 2 * (found.boxes[0, 2] - found.boxes[0, 0]), found.boxes).any()
    assert not landmarks_fit_boxes(np.full_like(points, np.nan), found.boxes).any()


def test_without_the_guard_every_detected_face_is_generated(frames, generated):
    outputs, stats, anonymizer = _run(frames[:1], {"generate.guard_candidates": 0})
    assert stats[0].generated == 1 and anonymizer.guard is None
    assert not np.array_equal(outputs[0], frames[0])


def test_bad_guard_settings_are_user_errors():
    for key, value in (("generate.guard_candidates", -1), ("generate.guard_distance", 0.0)):
        with pytest.raises(UserError, match=key.split(".")[1]):
            AnonymizerConfig().with_overrides({key: value})


def test_guard_candidates_option_reaches_the_config():
    from streamanon.cli import config_from_options

    assert config_from_options({"guard_candidates": 0}).generate.guard_candidates == 0
    assert config_from_options({}).generate.guard_candidates == 32


def test_on_a_grainy_camera_the_face_gets_the_frames_grain_the_same_on_every_run(frames):
    from streamanon.cli import config_from_options
    from streamanon.metrics.detail import noise_ratio

    rng = np.random.default_rng(0)
    grainy = [np.clip(np.rint(f + rng.normal(0, 6, f.shape)), 0, 255).astype(np.uint8) for f in frames[:2]]
    settings = {"generate.guard_candidates": 4}
    matched, _, anonymizer = _run(grainy, settings)
    again, _, _ = _run(grainy, settings)
    plain, _, _ = _run(grainy, {**settings, "generate.match_noise": False})
    assert all(np.array_equal(a, b) for a, b in zip(matched, again))  # seeded: files come out the same
    landmarks = _face_landmarks(anonymizer, grainy[1])
    assert noise_ratio(grainy[1], matched[1], landmarks) == pytest.approx(1.0, abs=0.15)
    assert noise_ratio(grainy[1], plain[1], landmarks) < 0.6
    assert not config_from_options({"no_match_noise": True}).generate.match_noise
    assert config_from_options({}).generate.match_noise


def test_generate_mode_file_command_on_a_photo(tmp_path):
    import av

    from streamanon.cli import main
    from streamanon.io.images import read_image, write_image

    with av.open(str(shared_path("videos/talking_512_katiehill.mp4"))) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    src, dst = tmp_path / "photo.png", tmp_path / "photo_anon.png"
    write_image(src, frame)
    assert main(["file", str(src), str(dst), "--mode", "generate", "-q"]) == 0
    out = read_image(dst)
    assert out.shape == frame.shape and not np.array_equal(out, frame)
    assert np.array_equal(read_image(src), frame)  # the input is untouched
    assert main(["file", str(src), str(tmp_path / "x.png"), "--mode", "generate", "--guard-candidates", "-1"]) == 2


def _counting(anonymizer: Anonymizer, name: str, result=None) -> list:
    """Wrap a guard method to record its calls (and optionally force its answer)."""
    calls: list = []
    original = getattr(anonymizer.guard, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs) if result is None else result

    setattr(anonymizer.guard, name, wrapper)
    return calls


@pytest.mark.parametrize("check_seconds, checks", [(0.0, 2), (10.0, 0)])
def test_the_guard_rechecks_a_shown_identity_when_due(frames, check_seconds, checks):
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "generate.guard_check_seconds": check_seconds}))  # fmt: skip
    chosen = _counting(anonymizer, "choose")
    checked = _counting(anonymizer, "recheck_margin")
    for i, image in enumerate(frames[:3]):
        anonymizer.process_frame(Frame(image, i))
    assert len(chosen) == 1 and len(checked) == checks  # frames 1 and 2 at 25 fps: 0.04 s apart


@pytest.mark.parametrize("margin, checks", [(0.01, 2), (0.2, 1)])
def test_an_identity_that_passes_narrowly_is_checked_again_on_the_next_frame(frames, margin, checks):
    """Due every 0.08 s (two frames): a check at frame 2 passed by less than CLOSE_MARGIN brings the
    next one to frame 3; a comfortable pass leaves it at frame 4."""
    from streamanon.generate.identities import CLOSE_MARGIN

    assert 0.01 < CLOSE_MARGIN < 0.2
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "generate.guard_check_seconds": 0.08}))  # fmt: skip
    checked = _counting(anonymizer, "recheck_margin", result=margin)
    for i, image in enumerate(frames[:4]):
        _, stats = anonymizer.process_frame(Frame(image, i))
        assert stats.generated == 1
    assert [args[0].track_id for args in checked] == [1] * checks


def test_rechecks_of_several_faces_take_turns(frames):
    """Two faces fall due together; one is checked a frame, the most overdue first."""
    import cv2

    pair = [np.hstack([cv2.resize(f, (256, 256)), cv2.resize(f[:, ::-1], (256, 256))]) for f in frames]
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "generate.guard_check_seconds": 0.0}))  # fmt: skip
    _, stats = anonymizer.process_frame(Frame(pair[0], 0))
    assert stats.generated == 2
    checked = _counting(anonymizer, "recheck_margin")
    per_frame = []
    for i, image in enumerate(pair[1:], start=1):
        before = len(checked)
        _, stats = anonymizer.process_frame(Frame(image, i))
        assert stats.generated == 2  # the face waiting for its check is still shown
        per_frame.append([args[0].track_id for args in checked[before:]])
    assert [len(ids) for ids in per_frame] == [1, 1, 1]
    assert per_frame[0] != per_frame[1] and per_frame[0] == per_frame[2]  # they alternate


@pytest.mark.parametrize("margin", [-0.01, float("nan")])  # the face came close; the check measured nothing
def test_an_identity_that_fails_its_check_is_replaced(frames, margin):
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "generate.guard_check_seconds": 0.0}))  # fmt: skip
    anonymizer.process_frame(Frame(frames[0], 0))
    (shown,) = anonymizer.identities.choices.values()
    chosen = _counting(anonymizer, "choose")
    _counting(anonymizer, "recheck_margin", result=margin)
    _, stats = anonymizer.process_frame(Frame(frames[1], 1))
    assert len(chosen) == 1 and stats.generated == 1
    assert chosen[0][3] is shown  # the failed identity is handed over: its successor is tried first


def test_identities_of_tracks_the_tracker_dropped_are_forgotten(frames):
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides({"replace.mode": "generate"}))
    anonymizer.process_frame(Frame(frames[0], 0))
    identities = anonymizer.identities
    (tid,) = identities.choices
    assert tid in identities.check_at
    kept, latents, ways = identities.select([], 1.0, known=set(), view_of=None)
    assert (kept, ways, latents.shape[0]) == ([], [], 0)
    assert not identities.choices and not identities.check_at


def _wait_for_choices(anonymizer: Anonymizer) -> None:
    """Until the guard's thread has done what it was given (choices and re-checks)."""
    identities = anonymizer.identities
    for pending in [*identities.choosing.values(), *(future for future, _ in identities.checking.values())]:
        pending.result(timeout=120)


def test_background_choices_blur_a_new_face_until_its_identity_is_in(frames):
    """generate.guard_background (live streams): no frame waits for the guard's choice; the new
    face is blurred like any fallback until the choice, made from the frame it appeared in,
    arrives; then it is the identity the guard picks in the foreground."""
    foreground = Anonymizer(AnonymizerConfig().with_overrides({"replace.mode": "generate"}))
    foreground.process_frame(Frame(frames[0], 0))
    (expected,) = foreground.identities.choices.values()

    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "generate.guard_background": True}))  # fmt: skip
    blurred, stats = anonymizer.process_frame(Frame(frames[0], 0))
    assert stats.generated == 0 and stats.fallback == 1 and len(anonymizer.identities.choosing) == 1
    blur = Anonymizer(AnonymizerConfig().with_overrides({"replace.mode": "blur"})).process(frames[0])
    assert np.array_equal(blurred, blur)  # hidden exactly as blur mode hides it
    _wait_for_choices(anonymizer)
    _, stats = anonymizer.process_frame(Frame(frames[1], 1))
    assert stats.generated == 1 and not anonymizer.identities.choosing
    (chosen,) = anonymizer.identities.choices.values()
    assert chosen.attempt == expected.attempt and np.array_equal(chosen.latent, expected.latent)


def test_guard_background_setting_is_checked():
    assert AnonymizerConfig().generate.guard_background is None  # unset: live realtime streams turn it on
    from streamanon.generate.runtime import load_generator

    config = AnonymizerConfig().with_overrides({"replace.mode": "generate", "generate.guard_background": True})
    assert Anonymizer(config).guard_in_background
    compiled = load_generator(None, backend="compile", warmup=False)  # not compiled until first used
    anonymizer = Anonymizer(config, generator=compiled)
    # Compiled graphs stay on the thread that built them; the guard's thread runs the same weights eagerly.
    assert anonymizer.guard_in_background and anonymizer.generator is compiled
    assert anonymizer.guard.generator.backend_name == "eager" and anonymizer.guard.generator.module is compiled.module
    foreground = Anonymizer(config.with_overrides({"generate.guard_background": False}), generator=compiled)
    assert not foreground.guard_in_background and foreground.guard.generator is compiled
    with pytest.raises(UserError, match="generate.guard_background"):
        AnonymizerConfig().with_overrides({"generate.guard_background": "yes"})


def test_background_recheck_keeps_the_face_shown_until_it_fails_then_blurs_it(frames):
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "generate.guard_background": True,
         "generate.guard_check_seconds": 0.0}))  # fmt: skip
    anonymizer.process_frame(Frame(frames[0], 0))
    _wait_for_choices(anonymizer)
    _, stats = anonymizer.process_frame(Frame(frames[1], 1))  # its first re-check falls due at once
    assert stats.generated == 1
    _wait_for_choices(anonymizer)
    (shown,) = anonymizer.identities.choices.values()
    chosen = _counting(anonymizer, "choose")
    checked = _counting(anonymizer, "recheck_margin", result=-0.01)  # as if the face came close to its original
    _, stats = anonymizer.process_frame(Frame(frames[2], 2))
    assert stats.generated == 1 and len(anonymizer.identities.checking) == 1  # shown while its check runs
    _wait_for_choices(anonymizer)
    _, stats = anonymizer.process_frame(Frame(frames[3], 3))
    assert stats.generated == 0 and stats.fallback == 1  # the failed check: blurred, chosen again
    assert len(checked) == 1 and len(anonymizer.identities.choosing) == 1
    _wait_for_choices(anonymizer)
    assert len(chosen) == 1 and chosen[0][3] is shown  # the successor of the failed identity first
    _, stats = anonymizer.process_frame(Frame(frames[0], 4))  # (the fixture holds 4 frames)
    assert stats.generated == 1
    anonymizer.reset()
    identities = anonymizer.identities
    assert not identities.choosing and not identities.checking and not identities.choices


def _two_faces(frames) -> list[np.ndarray]:
    import cv2

    return [np.hstack([cv2.resize(f, (256, 256)), cv2.resize(f[:, ::-1], (256, 256))]) for f in frames]


def _run_two_faces(pair, composite: str, strict_track: int | None = None, detect: str = "auto") -> list[np.ndarray]:
    """Two frames of two faces; optionally the second frame shows one track with colour transfer only."""
    from dataclasses import replace

    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "generate.composite": composite, "detect.backend": detect}))  # fmt: skip
    first, stats = anonymizer.process_frame(Frame(pair[0], 0))
    assert stats.generated == 2
    if strict_track is not None:
        tid = sorted(anonymizer.identities.choices)[strict_track]
        anonymizer.identities.choices[tid] = replace(anonymizer.identities.choices[tid], postprocess="strict")
    second, stats = anonymizer.process_frame(Frame(pair[1], 1))
    assert stats.generated == 2
    return [first, second]


def test_compositing_on_the_device_matches_the_host_path(frames):
    """composite = device keeps generated faces as tensors (CPU tensors here, CUDA on a GPU) from
    the generator to the paste; only rounding may differ from the OpenCV path."""
    pair = _two_faces(frames[:2])
    host = _run_two_faces(pair, "host", strict_track=1)  # second frame: one post-processing per face
    device = _run_two_faces(pair, "device", strict_track=1)
    for h, d, original in zip(host, device, pair):
        assert np.abs(h.astype(int) - d).max() <= 1
        assert (d != original).any(axis=-1).sum() > 5000  # both faces were replaced
    # The mixed frame really shows the second face another way.
    assert np.abs(_run_two_faces(pair, "host")[1].astype(int) - host[1]).max() > 10


def test_with_the_torch_detector_each_frame_is_uploaded_once(frames):
    """detect.backend = torch: the frame goes to the detector's device once (timed as "upload"),
    detection resizes it there and the device paste reuses it; the input frames stay as they were."""
    from streamanon.timing import StageTimer

    pair = _two_faces(frames[:2])
    before = [f.copy() for f in pair]
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "generate.composite": "device", "detect.backend": "torch"}))  # fmt: skip
    timer = StageTimer()
    for index, frame in enumerate(pair):
        out, stats = anonymizer.process_frame(Frame(frame, index), timer)
        assert stats.generated == 2 and (out != frame).any(axis=-1).sum() > 5000
        assert set(timer.take()) >= {"upload", "detect", "generate", "composite"}
    assert all(np.array_equal(f, b) for f, b in zip(pair, before))
    # The same faces as the onnxruntime detector finds (they differ by float rounding: ~5e-5 px). The
    # frames themselves are not compared: dlib's regression trees can turn such a difference into
    # landmarks a pixel apart (seen with onnxruntime 1.32), and so into a slightly different face.
    onnxruntime = _detections_in_pipeline(pair, "onnxruntime")
    torch_path = _detections_in_pipeline(pair, "torch")
    for a, b in zip(onnxruntime, torch_path):
        assert len(a) == len(b) == 2
        assert np.abs(a.boxes - b.boxes).max() < 1e-2 and np.abs(a.keypoints - b.keypoints).max() < 1e-2


def _detections_in_pipeline(pair, detect: str) -> list:
    """What the pipeline's detection stage hands the tracker for each frame of ``pair``."""
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides({"replace.mode": "generate", "detect.backend": detect}))
    found, run_detect = [], anonymizer._detect
    anonymizer._detect = lambda *args: found.append(run_detect(*args)) or found[-1]
    for index, frame in enumerate(pair):
        assert anonymizer.process_frame(Frame(frame, index))[1].generated == 2
    return found


def test_torch_landmarks_give_the_same_frames_as_dlibs(frames):
    """landmarks.backend = torch runs dlib's trees for both faces of a frame at once; the points
    are dlib's, so the anonymized frames are the same to the byte."""
    pair = _two_faces(frames[:2])
    outputs = {}
    for backend in ("dlib", "torch"):
        anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
            {"replace.mode": "generate", "landmarks.backend": backend}))  # fmt: skip
        outputs[backend] = [anonymizer.process_frame(Frame(f, i))[0] for i, f in enumerate(pair)]
        assert ("landmarks torch on cpu" in anonymizer.backend_name) == (backend == "torch")
        assert anonymizer.landmarks is anonymizer.guard.observer.predictor  # the guard's too
    for a, b, original in zip(outputs["dlib"], outputs["torch"], pair):
        np.testing.assert_array_equal(a, b)
        assert (a != original).any(axis=-1).sum() > 5000


def test_with_the_frame_uploaded_the_torch_landmarks_read_it_there(frames, monkeypatch):
    """The GPU layout (torch detector and landmarks on one device; CPU tensors here): the landmark
    stage and the alignment sample their crops on the uploaded frame instead of cutting them on
    the host, and the faces are generated where the host path puts them."""
    import torch

    import streamanon.faces.box_sampling as box_sampling
    import streamanon.faces.shape_predictor_torch as spt
    import streamanon.pipeline as pipeline

    sampled, aligned = [], []
    pixels, warp = spt.FramePixels, box_sampling.warp_on_device

    def pixels_spy(frame, to_frame, crop_size):
        sampled.append(len(to_frame))
        return pixels(frame, to_frame, crop_size)

    def warp_spy(frame, to_frame, size):
        aligned.append(len(to_frame))
        return warp(frame, to_frame, size)

    monkeypatch.setattr(spt, "FramePixels", pixels_spy)
    monkeypatch.setattr(box_sampling, "warp_on_device", warp_spy)
    # The pipeline samples on the frame only on a GPU (host warps are faster on a CPU): here, on
    # CPU tensors, as it would there.
    assert not pipeline.samples_on_device(torch.zeros(2, 2, 3)) and not pipeline.samples_on_device(None)
    monkeypatch.setattr(pipeline, "samples_on_device", lambda frame: frame is not None)
    pair = _two_faces(frames[:2])
    outputs = {}
    for backend in ("dlib", "torch"):
        # Without the guard both runs show the same identities: only the landmarks differ.
        anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
            {"replace.mode": "generate", "detect.backend": "torch", "landmarks.backend": backend,
             "generate.guard_candidates": 0}))  # fmt: skip
        outputs[backend] = []
        for i, frame in enumerate(pair):
            out, stats = anonymizer.process_frame(Frame(frame, i))
            assert stats.generated == 2
            outputs[backend].append(out)
    assert sampled == [2, 2]  # both faces of each frame at once, only with the torch landmarks
    assert aligned == [2, 2, 2, 2]  # the aligned crops too, with either landmark backend
    for a, b, original in zip(outputs["dlib"], outputs["torch"], pair):
        changed = (a != original).any(axis=-1)
        difference = np.abs(a.astype(int) - b)[changed].mean()
        assert difference < 6  # measured 2.6-2.9; another identity (seed 1) differs by 14.4


def test_a_failing_device_alignment_hands_over_to_the_host(frames, monkeypatch, caplog):
    """An error sampling the aligned crops on the GPU (a CUDA error) must not blur every face from
    then on: the host warps take over, once and for the rest of the run."""
    import streamanon.faces.box_sampling as box_sampling
    import streamanon.pipeline as pipeline

    calls = []

    def broken(frame, to_frame, size):
        calls.append(len(to_frame))
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(box_sampling, "warp_on_device", broken)
    monkeypatch.setattr(pipeline, "samples_on_device", lambda frame: frame is not None)
    pair = _two_faces(frames[:2])
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "detect.backend": "torch", "generate.guard_candidates": 0}))  # fmt: skip
    for i, frame in enumerate(pair):
        out, stats = anonymizer.process_frame(Frame(frame, i))
        assert stats.generated == 2 and (out != frame).any(axis=-1).sum() > 5000
    assert calls == [2]  # tried once, then the host
    assert caplog.text.count("the host aligns them from now on") == 1


def test_composite_setting_reaches_the_summary_and_rejects_bad_values():
    anonymizer = Anonymizer(AnonymizerConfig().with_overrides(
        {"replace.mode": "generate", "generate.composite": "device"}))  # fmt: skip
    assert anonymizer.backend_name.endswith(", composite on cpu)")
    auto = Anonymizer(AnonymizerConfig().with_overrides({"replace.mode": "generate"}))
    assert "composite on" not in auto.backend_name  # auto: the host on a CPU run
    with pytest.raises(UserError, match="generate.composite"):
        AnonymizerConfig().with_overrides({"generate.composite": "gpu"})


def test_the_guard_finds_candidates_landmarks_with_the_pipelines_own_stages(generated):
    _, _, anonymizer = generated
    guard = anonymizer.guard
    assert guard.landmarks == "both"  # generate.guard_landmarks' default
    assert guard.observer.detector is anonymizer.detector and guard.observer.predictor is anonymizer.landmarks
