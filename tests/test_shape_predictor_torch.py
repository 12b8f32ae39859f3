"""dlib's shape predictor in PyTorch: its reading of dlib's file, and the same points as dlib's."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
import torch
from conftest import shared_path

import streamanon.faces.shape_predictor_torch as spt
from streamanon.config import AnonymizerConfig, LandmarksConfig
from streamanon.errors import UserError
from streamanon.faces.align import warp_image
from streamanon.faces.detect import CenterFaceDetector
from streamanon.faces.dlib_serial import DlibFormatError, DlibReader, float_blocks
from streamanon.faces.landmarks import LandmarkPredictor, nme, predictor_frames, read_pts
from streamanon.faces.shape_predictor_torch import FramePixels, TorchShapePredictor, load_dlib_shape_predictor
from streamanon.models import resolve_model

WORK = 160  # the predictor square in LandmarkPredictor's working crop
SQUARE = (80, 80, 240, 240)


# ---------------------------------------------------------------------------------------------
# dlib's serialization, written here the way dlib/serialize.h writes it


def dlib_int(value: int) -> bytes:
    magnitude = abs(value).to_bytes(8, "little").rstrip(b"\0") or b"\0"  # dlib writes 0 as one zero byte
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def dlib_float(value: float) -> bytes:
    mantissa, exponent = math.frexp(value)
    return dlib_int(int(mantissa * 2**24)) + dlib_int(exponent - 24)


def dlib_shape_vector(values) -> bytes:
    return dlib_int(-len(values)) + dlib_int(-1) + b"".join(dlib_float(float(v)) for v in values)


def small_predictor_file(rng, parts=5, levels=3, trees=4, depth=2, features=10, tree_counts=None) -> bytes:
    """A random shape predictor serialized as dlib/image_processing/shape_predictor.h writes one."""
    splits = 2**depth - 1
    out = dlib_int(1) + dlib_shape_vector(rng.uniform(0.2, 0.8, 2 * parts).astype(np.float32))
    out += dlib_int(levels)
    for level in range(levels):
        count = trees if tree_counts is None else tree_counts[level]
        out += dlib_int(count)
        for _ in range(count):
            out += dlib_int(splits)
            for _ in range(splits):
                i1, i2 = rng.integers(0, features, 2)
                out += dlib_int(int(i1)) + dlib_int(int(i2)) + dlib_float(float(rng.integers(-40, 40)))
            out += dlib_int(splits + 1)
            for _ in range(splits + 1):
                out += dlib_shape_vector(rng.normal(0, 0.02, 2 * parts).astype(np.float32))
    out += dlib_int(levels) + b"".join(
        dlib_int(features) + b"".join(dlib_int(int(a)) for a in rng.integers(0, parts, features)) for _ in range(levels)
    )
    out += dlib_int(levels)
    for _ in range(levels):
        offsets = rng.normal(0, 0.1, 2 * features).astype(np.float32)
        out += dlib_int(features) + b"".join(dlib_float(float(v)) for v in offsets)
    return out


def test_a_predictor_written_here_reads_and_predicts_as_dlib_reads_and_predicts_it(tmp_path):
    """The format and the cascade on a small random model that dlib itself loads: its points on
    noise images are dlib's exactly; files dlib's trainer never makes are refused."""
    rng = np.random.default_rng(6)
    path = tmp_path / "small.dat"
    path.write_bytes(small_predictor_file(rng))
    weights = load_dlib_shape_predictor(path, cache=False)
    assert weights.split_features.shape == (3, 4, 3, 2) and weights.leaves.shape == (3, 4, 4, 5, 2)
    ours = TorchShapePredictor(weights)
    theirs = dlib.shape_predictor(str(path))
    images = rng.integers(0, 256, (4, 60, 70), dtype=np.uint8)
    rects = np.array([[5, 5, 60, 50], [-10, 0, 40, 45], [20, 15, 69, 59], [0, 0, 30, 30]])
    points = _rounded(ours(torch.from_numpy(images), torch.from_numpy(rects)))
    for image, rect, mine in zip(images, rects, points):
        np.testing.assert_array_equal(mine, _dlib_points(dlib_predictor=theirs, image=image, rect=rect))
    uneven = tmp_path / "uneven.dat"
    uneven.write_bytes(small_predictor_file(np.random.default_rng(7), tree_counts=[4, 3, 4]))
    with pytest.raises(UserError, match="different tree"):
        load_dlib_shape_predictor(uneven, cache=False)


def test_float_blocks_decodes_every_block_after_the_header():
    rng = np.random.default_rng(0)
    header = dlib_int(-6) + dlib_int(-1)
    blocks = rng.normal(0, 3, (5, 6)).astype(np.float32)
    blocks[1, 2], blocks[2, 0] = 0.0, -1e-30
    stream = dlib_int(1) + dlib_float(2.5)  # other data first: not a block
    for block in blocks:
        stream += dlib_int(len(block)) + header + b"".join(dlib_float(float(v)) for v in block)
    starts, ends, values = float_blocks(stream, header, 6)
    assert len(starts) == 5
    np.testing.assert_array_equal(values, blocks)
    reader = DlibReader(stream)  # the one-value-at-a-time reader agrees, and ends where the blocks end
    for start, end, block in zip(starts, ends, blocks):
        reader.pos = int(start) + len(header)
        assert [reader.real() for _ in range(6)] == [float(v) for v in block]
        assert reader.pos == end
    with pytest.raises(DlibFormatError, match="past the end"):
        float_blocks(stream[:-3], header, 6)
    assert float_blocks(stream, b"\x85\x01", 6)[0].size == 0


def test_float_blocks_rejects_malformed_integers():
    header = dlib_int(-2) + dlib_int(-1)
    with pytest.raises(DlibFormatError, match="malformed"):
        float_blocks(header + b"\x31\x01" + dlib_int(0) + dlib_float(1.0), header, 2)  # 0x30: reserved bits


# ---------------------------------------------------------------------------------------------
# the model file


@pytest.fixture(scope="module")
def weights():
    return load_dlib_shape_predictor(resolve_model("dlib_landmarks68"))


@pytest.fixture(scope="module")
def predictor(weights) -> TorchShapePredictor:
    return TorchShapePredictor(weights)


@pytest.fixture(scope="module")
def dlib_predictor():
    return dlib.shape_predictor(str(resolve_model("dlib_landmarks68")))


def test_reads_dlibs_68_point_model(weights):
    # 15 cascade levels of 500 depth-4 trees, 500 feature pixels a level (dlib's published model).
    assert weights.initial_shape.shape == (68, 2)
    assert weights.split_features.shape == (15, 500, 15, 2)
    assert weights.leaves.shape == (15, 500, 16, 68, 2)
    assert weights.anchors.shape == (15, 500) and weights.deltas.shape == (15, 500, 2)
    assert weights.anchors.max() < 68 and weights.split_features.max() < 500
    # The mean shape lies in the unit square of the face rectangle, chin below the eyes.
    assert 0 <= weights.initial_shape.min() and weights.initial_shape.max() <= 1.1
    assert weights.initial_shape[8, 1] > weights.initial_shape[36:48, 1].max()
    assert np.isfinite(weights.leaves).all() and np.abs(weights.leaves).max() < 1


def test_reads_the_5_point_model_too():
    five = load_dlib_shape_predictor(resolve_model("dlib_landmarks5"))
    assert five.initial_shape.shape == (5, 2) and five.leaves.shape[-2:] == (5, 2)
    assert five.deltas.shape[1] == five.anchors.shape[1]


def test_parsed_model_is_cached_and_a_damaged_cache_is_parsed_again(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMANON_CACHE", str(tmp_path / "cache"))
    model = resolve_model("dlib_landmarks68")
    first = load_dlib_shape_predictor(model)
    (cached,) = (tmp_path / "cache").glob("shape_predictor-*.npz")

    def no_parsing(data):
        raise AssertionError("parsed although a cache exists")

    with monkeypatch.context() as patched:
        patched.setattr(spt, "parse_dlib_shape_predictor", no_parsing)
        again = load_dlib_shape_predictor(model)
    for name in ("initial_shape", "split_features", "thresholds", "leaves", "anchors", "deltas"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
        np.testing.assert_array_equal(getattr(again, name), getattr(weights, name))
    cached.write_bytes(b"not an npz")  # damaged: parsed again and rewritten
    assert np.array_equal(load_dlib_shape_predictor(model).leaves, first.leaves)
    assert cached.stat().st_size > 60e6
    # A cache folder that cannot be made (a file is in the way) only costs the parse.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("STREAMANON_CACHE", str(blocker / "cache"))
    assert np.array_equal(load_dlib_shape_predictor(model).anchors, first.anchors)


def test_cache_folder_setting(monkeypatch, tmp_path):
    from streamanon.models import cache_dir

    monkeypatch.setenv("STREAMANON_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("STREAMANON_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "streamanon"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "streamanon"


def test_bad_files_are_one_line_user_errors(tmp_path):
    data = resolve_model("dlib_landmarks68").read_bytes()
    for name, content, message in [
        ("cut.dat", data[: len(data) // 2], "not a dlib shape predictor"),
        ("resnet.dat", resolve_model("dlib_face_embedding").read_bytes()[:100_000], "not a dlib shape predictor"),
        ("empty.dat", b"", "not a dlib shape predictor"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(UserError, match=message) as err:
            load_dlib_shape_predictor(path)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="cannot read"):
        load_dlib_shape_predictor(tmp_path / "missing.dat")


def test_similarity_basis_gives_dlibs_least_squares_similarity():
    rng = np.random.default_rng(1)
    source = torch.from_numpy(rng.uniform(0, 1, (68, 2)))
    angle, scale = 0.3, 1.7
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    exact = source.numpy() @ rotation.T + [0.2, -0.1]
    noisy = exact + rng.normal(0, 0.01, exact.shape)
    targets = torch.from_numpy(np.stack([exact, noisy]))
    a, b = (targets.reshape(2, -1) @ spt._similarity_basis(source)).numpy().T
    m = np.stack([np.array([[a[i], -b[i]], [b[i], a[i]]]) for i in range(2)])
    np.testing.assert_allclose(m[0], rotation, atol=1e-9)
    # Least squares: the noisy fit beats nearby similarities.
    centred_src = source.numpy() - source.numpy().mean(0)
    centred_dst = noisy - noisy.mean(0)

    def error(mat):
        return ((centred_src @ mat.T - centred_dst) ** 2).sum()

    for da, db in [(0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01)]:
        other = m[1] + np.array([[da, -db], [db, da]])
        assert error(m[1]) < error(other)


# ---------------------------------------------------------------------------------------------
# the same points as dlib's


def _dlib_points(dlib_predictor, image: np.ndarray, rect) -> np.ndarray:
    shape = dlib_predictor(image, dlib.rectangle(*rect))
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def _rounded(points: torch.Tensor) -> np.ndarray:
    return torch.floor(points + 0.5).numpy()


def test_matches_dlib_to_the_pixel_on_noise_and_partly_outside_rects(predictor, dlib_predictor):
    """Any image, any rectangle (here noise and smooth blobs, rectangles reaching past the
    border so that feature pixels fall outside): on the CPU every point is dlib's."""
    rng = np.random.default_rng(2)
    noise = rng.integers(0, 256, (3, 120, 150, 3), dtype=np.uint8)
    blobs = cv2.GaussianBlur(noise[0], (0, 0), 6)
    grey_rgb = np.repeat(noise[0, :, :, :1], 3, axis=2)
    images = np.concatenate([noise, blobs[None], grey_rgb[None]])
    rects = np.array([[20, 10, 120, 110], [-30, -20, 60, 70], [100, 60, 190, 150], [5, 5, 144, 114], [40, 30, 90, 80]])
    ours = _rounded(predictor(torch.from_numpy(images), torch.from_numpy(rects)))
    for image, rect, points in zip(images, rects, ours):
        np.testing.assert_array_equal(points, _dlib_points(dlib_predictor, image, rect))


@pytest.fixture(scope="module")
def face_crops() -> list[np.ndarray]:
    """Predictor crops of the first HELEN test faces, cut exactly as LandmarkPredictor cuts them."""
    folder = shared_path("landmarks68/helen_test")
    detector, landmarks = CenterFaceDetector(), LandmarkPredictor()
    crops = []
    for jpg in sorted(folder.glob("*.jpg"))[:24]:
        image = cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB)
        found = detector(image)
        if len(found):
            centre, side, angle = (v[0] for v in predictor_frames(found.boxes[:1], found.keypoints[:1]))
            crops.append(warp_image(image, landmarks._to_crop(centre, float(side), float(angle)), 2 * WORK))
    assert len(crops) >= 20
    return crops


def test_matches_dlib_to_the_pixel_on_faces_batched(predictor, dlib_predictor, face_crops):
    batch = torch.from_numpy(np.stack(face_crops))
    rects = torch.tensor([SQUARE] * len(face_crops))
    points = predictor(batch, rects)
    for crop, ours in zip(face_crops, _rounded(points)):
        np.testing.assert_array_equal(ours, _dlib_points(dlib_predictor, crop, SQUARE))
    # A face's points do not depend on the rest of the batch.
    alone = predictor(batch[3:4], rects[3:4])
    np.testing.assert_array_equal(alone[0].numpy(), points[3].numpy())
    # Unrounded, they carry what dlib's rounding drops (mean |difference| ~0.25 px, never 0.5+).
    difference = np.abs(points.numpy() - _rounded(points))
    assert difference.max() <= 0.5 and difference.mean() > 0.15


def test_summed_leaves_stay_within_float_rounding(predictor, face_crops, monkeypatch):
    """Off the CPU the leaves of a level are summed before they are added (one embedding_bag):
    float32 rounding in another order. Run that path here and bound its drift."""
    batch, rects = torch.from_numpy(np.stack(face_crops)), torch.tensor([SQUARE] * len(face_crops))
    sequential = predictor(batch, rects)
    monkeypatch.setattr(spt, "_adds_in_dlib_order", lambda device: False)
    summed = predictor(batch, rects)
    drift = (summed - sequential).abs()
    # Mostly ~1e-4 px; where a feature pixel lands on the other side of a rounding boundary, a
    # tree takes another branch and points move (measured: at most 0.42 px on these faces).
    assert drift.median() < 0.01 and drift.max() < 2


def test_landmark_predictor_backends_give_the_same_landmarks(face_crops):
    folder = shared_path("landmarks68/afw")
    detector = CenterFaceDetector()
    by_backend = {name: LandmarkPredictor(backend=name) for name in ("dlib", "torch")}
    raw = {name: LandmarkPredictor(backend=name, conversion="none") for name in ("dlib", "torch")}
    faces = 0
    for jpg in sorted(folder.glob("*.jpg"))[:8]:
        image = cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB)
        found = detector(image)
        faces += len(found)
        for predictors, kps in ((by_backend, found.keypoints), (raw, None)):
            ours, dlibs = (predictors[name].predict(image, found.boxes, kps) for name in ("torch", "dlib"))
            np.testing.assert_array_equal(ours, dlibs)
    assert faces >= 12  # several frames hold more than one face: batches, not single faces
    assert by_backend["torch"].predict(image, np.zeros((0, 4))).shape == (0, 68, 2)
    assert by_backend["torch"].where == "torch on cpu" and by_backend["dlib"].where == "dlib"


# ---------------------------------------------------------------------------------------------
# crops sampled on the frame (the GPU path: no crops cut on the host)


def _affine(zoom: float, angle: float, centre, crop_size: int) -> np.ndarray:
    """Frame -> crop (2, 3), as LandmarkPredictor builds it: rotate about ``centre``, zoom, centre."""
    cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
    m[:, 2] = crop_size / 2 - m[:, :2] @ np.asarray(centre, np.float64)
    return m


def test_frame_pixels_are_bilinear_where_the_crop_magnifies_and_area_averages_where_it_shrinks():
    rng = np.random.default_rng(4)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (200, 240), dtype=np.uint8), (0, 0), 1.5)
    size = 64
    where = torch.from_numpy(rng.integers(0, size, (1, 300, 2)))
    # Magnified 2.5x and turned: the frame's bilinear interpolation, as cv2.warpAffine gives it.
    to_crop = _affine(2.5, 0.3, (120, 90), size)
    read = FramePixels(torch.from_numpy(frame), torch.from_numpy(cv2.invertAffineTransform(to_crop))[None], size)
    warped = cv2.warpAffine(frame, to_crop, (size, size), flags=cv2.INTER_LINEAR)
    expected = warped[where[0, :, 1], where[0, :, 0]]
    assert np.abs(read.read(where)[0].numpy() - expected).max() <= 1  # cv2 interpolates in fixed point
    # Shrunk 4x, upright: a crop pixel is the frame's mean over a square of side sqrt(2) * 4
    # (box_sampling.footprint_half_sides) centred where it maps; brute force on an 8x finer grid.
    to_crop = np.array([[0.25, 0.0, -0.375], [0.0, 0.25, -0.375]])  # crop pixel u sits at frame x = 4u + 1.5
    read = FramePixels(torch.from_numpy(frame), torch.from_numpy(cv2.invertAffineTransform(to_crop))[None], 50)
    fine = np.repeat(np.repeat(frame.astype(np.float64), 8, axis=0), 8, axis=1)
    half = 0.5 * 2**0.5 * 4
    inside = torch.from_numpy(rng.integers(1, 49, (1, 200, 2)))  # squares within the frame
    expected = []
    for u, v in inside[0].numpy():
        cx, cy = 4 * u + 1.5, 4 * v + 1.5
        x0, x1 = (round((cx + 0.5 + d) * 8) for d in (-half, half))
        y0, y1 = (round((cy + 0.5 + d) * 8) for d in (-half, half))
        expected.append(fine[y0:y1, x0:x1].mean())
    assert np.abs(read.read(inside)[0].numpy() - np.array(expected)).max() <= 1
    # Outside the crop: 0, as dlib reads outside its image.
    assert (read.read(torch.tensor([[[-1, 3], [3, 50], [50, 0]]])) == 0).all()


def _two_frames_and_maps(faces: int):
    rng = np.random.default_rng(5)
    frames = [torch.from_numpy(cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 2))
              for _ in range(2)]  # fmt: skip
    maps = [
        torch.from_numpy(np.stack([
            cv2.invertAffineTransform(_affine(rng.uniform(0.5, 3), rng.uniform(-0.5, 0.5), rng.uniform(20, 140, 2), 96))
            for _ in range(faces)
        ]))
        for _ in range(2)
    ]  # fmt: skip
    return frames, maps


def test_frame_pixels_reloaded_read_the_new_frame(predictor):
    """load() writes into the same buffers (what a CUDA graph replays on): after it, the object
    reads exactly what a fresh one reads; frames or face counts of another size are refused."""
    frames, maps = _two_frames_and_maps(3)
    rects = torch.tensor([[24, 24, 72, 72]] * 3)
    reused = FramePixels.allocate(120, 160, 3, 96, torch.device("cpu"))
    for frame, to_frame in zip(frames, maps):
        reused.load(frame, to_frame)
        fresh = predictor.run(FramePixels(frame, to_frame, 96), rects)
        assert torch.equal(predictor.run(reused, rects), fresh)
    with pytest.raises(UserError, match="FramePixels for 3 faces"):
        reused.load(frames[0][:100], maps[0])
    with pytest.raises(UserError, match="FramePixels for 3 faces"):
        reused.load(frames[0], maps[0][:2])


@pytest.mark.gpu
def test_cuda_graphs_replay_what_the_eager_frame_path_computes():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cuda = TorchShapePredictor.from_dlib_file().to("cuda")
    graphs = spt.FrameGraphs(cuda, 96)
    for faces in (1, 3, 1):  # 1 again: the first graph replays on a new frame
        frames, maps = _two_frames_and_maps(faces)
        rects = torch.tensor([[24, 24, 72, 72]] * faces)
        for frame, to_frame in zip(frames, maps):
            frame = frame.cuda()
            eager = cuda.run(FramePixels(frame, to_frame.cuda(), 96), rects)
            assert (graphs(frame, to_frame, rects) - eager).abs().max() < 1e-3
    assert len(graphs._graphs) == 2


def test_landmarks_sampled_on_the_frame_are_as_good_as_the_host_crops():
    """LandmarkPredictor.predict(..., frame=tensor): the same 300-W accuracy as cutting crops on
    the host (measured on 60 + 60 faces: NME 0.0266 vs 0.0268, 0.0396 vs 0.0399), and points within
    ~0.5 % of the eye distance of the host path's."""
    detector, landmarks = CenterFaceDetector(), LandmarkPredictor(backend="torch")
    errors, shifts = {"host": [], "frame": []}, []
    for folder in ("helen_test", "afw"):
        for pts in sorted(shared_path(f"landmarks68/{folder}").glob("*.pts"))[:15]:
            truth = read_pts(pts)
            image = cv2.cvtColor(cv2.imread(str(pts.with_suffix(".jpg"))), cv2.COLOR_BGR2RGB)
            found = detector(image)
            centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
            k = int(np.argmin(np.linalg.norm(centres - truth.mean(0), axis=1)))
            box, kps = found.boxes[k : k + 1], found.keypoints[k : k + 1]
            host = landmarks.predict(image, box, kps)[0]
            sampled = landmarks.predict(image, box, kps, frame=torch.from_numpy(image))[0]
            errors["host"].append(nme(host, truth))
            errors["frame"].append(nme(sampled, truth))
            # nme() divides by its second argument's eye distance: re-scale to the truth's.
            eyes = np.linalg.norm(host[45] - host[36]) / np.linalg.norm(truth[45] - truth[36])
            shifts.append(nme(sampled, host) * eyes)
    assert abs(np.mean(errors["frame"]) - np.mean(errors["host"])) < 0.002
    assert np.mean(errors["frame"]) < 0.045 and np.mean(shifts) < 0.01
    assert max(shifts) > 0  # really another path, not the host crops again


def test_a_failing_torch_predictor_hands_over_to_dlib(caplog):
    """A CUDA error in the port must not blur every face from then on: dlib takes over, with the
    same points, and the run says so once."""
    image = np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    box = np.array([[20.0, 15.0, 90.0, 85.0]])
    expected = LandmarkPredictor(backend="dlib").predict(image, box)
    landmarks = LandmarkPredictor(backend="torch")

    def broken(images, rects):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    landmarks._torch_predictor = broken
    np.testing.assert_array_equal(landmarks.predict(image, box), expected)
    assert landmarks.where == "dlib" and "dlib runs it from now on" in caplog.text
    np.testing.assert_array_equal(landmarks.predict(image, box), expected)
    assert caplog.text.count("dlib runs it from now on") == 1


def test_predict_each_runs_one_face_of_each_image_in_one_call(monkeypatch):
    """The identity guard measures a face in many candidate views: one predictor call for all of
    them (one batch with torch), the same points as one call per image; a NaN keypoint row means
    the box alone, as predict() without keypoints."""
    detector = CenterFaceDetector()
    images, boxes, keypoints = [], [], []
    for jpg in sorted(shared_path("landmarks68/helen_test").glob("*.jpg"))[:5]:
        image = cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB)
        found = detector(image)
        images.append(image)
        boxes.append(found.boxes[0])
        keypoints.append(found.keypoints[0])
    keypoints[2] = np.full((5, 2), np.nan, np.float32)
    one_by_one = LandmarkPredictor(backend="dlib")
    expected = np.stack([
        one_by_one.predict(img, box[None], None if np.isnan(kps).any() else kps[None])[0]
        for img, box, kps in zip(images, boxes, keypoints)
    ])  # fmt: skip
    batched = LandmarkPredictor(backend="torch")
    calls = []
    run = batched._run_torch
    monkeypatch.setattr(batched, "_run_torch", lambda crops, rects: calls.append(len(crops)) or run(crops, rects))
    np.testing.assert_array_equal(batched.predict_each(images, np.stack(boxes), np.stack(keypoints)), expected)
    np.testing.assert_array_equal(one_by_one.predict_each(images, np.stack(boxes), np.stack(keypoints)), expected)
    assert calls == [5]
    with pytest.raises(UserError, match="2 images for 5 face boxes"):
        batched.predict_each(images[:2], np.stack(boxes))


def test_backend_setting_and_its_errors():
    assert LandmarkPredictor.from_config(LandmarksConfig()).backend == "dlib"  # auto on a CPU
    assert LandmarkPredictor.from_config(LandmarksConfig(backend="torch")).backend == "torch"
    with pytest.raises(UserError, match="landmarks.backend"):
        AnonymizerConfig().with_overrides({"landmarks.backend": "tensorrt"})
    with pytest.raises(UserError, match="landmark backend"):
        LandmarkPredictor(backend="onnx")  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"\(B, H, W"):
        TorchShapePredictor.from_dlib_file()(torch.zeros(2, 8, 8, 4, dtype=torch.uint8), torch.zeros(2, 4))


@pytest.mark.gpu
def test_cuda_matches_the_cpu_within_float_rounding(predictor, face_crops):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cuda = TorchShapePredictor.from_dlib_file().to("cuda")
    batch, rects = torch.from_numpy(np.stack(face_crops)), torch.tensor([SQUARE] * len(face_crops))
    on_cpu = predictor(batch, rects)  # dlib's points, unrounded
    drift = (cuda(batch.cuda(), rects).cpu() - on_cpu).abs()
    assert drift.median() < 0.01 and drift.max() < 2  # float32 sums in another order, as on the CPU test
