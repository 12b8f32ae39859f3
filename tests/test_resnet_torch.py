"""dlib's face ResNet in PyTorch (faces/resnet_torch.py): same descriptors as dlib's FaceEmbedder.

Real faces: 8 HELEN test photos with their 68-point ground truth (8 different people) and
3 frames of one talking-head clip (one person, landmarks from CenterFace + dlib). Measured
on these: max |torch - dlib| = 4e-7 per descriptor value (the bound below is 2e-3).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402
from conftest import shared_path  # noqa: E402

from streamanon.errors import ModelUnavailable, UserError  # noqa: E402
from streamanon.faces.embed import SAME_PERSON_DISTANCE, FaceEmbedder, embedding_distance  # noqa: E402
from streamanon.faces.landmarks import read_pts  # noqa: E402
from streamanon.faces.resnet_torch import TorchFaceEmbedder, load_dlib_face_resnet  # noqa: E402
from streamanon.models import resolve_model  # noqa: E402

N_HELEN = 8
VIDEO_FRAMES = (0, 60, 120)
MAX_ABS_DIFF = 2e-3  # measured 4e-7 (float32 summation order only)


def _model_path(name: str = "dlib_face_embedding"):
    try:
        return resolve_model(name)
    except ModelUnavailable as exc:
        pytest.skip(f"model file not available: {exc}")


@pytest.fixture(scope="module")
def embedders() -> tuple[FaceEmbedder, TorchFaceEmbedder]:
    _model_path()
    return FaceEmbedder(), TorchFaceEmbedder()


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, landmarks) of 8 different HELEN people, then 3 frames of one person."""
    import av

    from streamanon.faces.detect import CenterFaceDetector
    from streamanon.faces.landmarks import LandmarkPredictor

    items = []
    for pts in sorted(shared_path("landmarks68/helen_test").glob("*.pts"))[:N_HELEN]:
        image = cv2.cvtColor(cv2.imread(str(pts.with_suffix(".jpg"))), cv2.COLOR_BGR2RGB)
        items.append((image, read_pts(pts)))
    detector, predictor = CenterFaceDetector(), LandmarkPredictor()
    with av.open(str(shared_path("videos/talking_512_katiehill.mp4"))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in VIDEO_FRAMES:
                image = frame.to_ndarray(format="rgb24")
                found = detector(image)
                assert len(found) == 1
                items.append((image, predictor.predict(image, found.boxes, found.keypoints)[0]))
            if i >= max(VIDEO_FRAMES):
                break
    return items


@pytest.fixture(scope="module")
def descriptors(embedders, faces) -> tuple[np.ndarray, np.ndarray]:
    dlib_embedder, torch_embedder = embedders
    reference = np.stack([dlib_embedder.embed(image, lm) for image, lm in faces])
    ported = np.stack([torch_embedder.embed(image, lm) for image, lm in faces])
    return reference, ported


def test_descriptors_match_dlib_on_real_faces(descriptors):
    reference, ported = descriptors
    assert ported.shape == (N_HELEN + len(VIDEO_FRAMES), 128) and ported.dtype == np.float32
    assert np.abs(ported - reference).max() <= MAX_ABS_DIFF


def test_same_and_different_person_decisions_agree(descriptors):
    reference, ported = descriptors
    d_ref = embedding_distance(reference[:, None], reference[None])
    d_port = embedding_distance(ported[:, None], ported[None])
    pairs = np.triu(np.ones_like(d_ref, dtype=bool), k=1)
    assert np.abs(d_port - d_ref)[pairs].max() <= MAX_ABS_DIFF
    same_ref, same_port = (d_ref < SAME_PERSON_DISTANCE)[pairs], (d_port < SAME_PERSON_DISTANCE)[pairs]
    np.testing.assert_array_equal(same_port, same_ref)
    # Not a vacuous agreement: the clip's frames match each other, and most pairs are
    # different people (one HELEN pair measures 0.55, a false match of dlib's own).
    video = slice(N_HELEN, None)
    assert (d_port[video, video] < SAME_PERSON_DISTANCE).all()
    assert (~same_ref).sum() > 0.9 * pairs.sum()


def test_network_matches_dlib_on_chips_including_noise(embedders, faces):
    dlib_embedder, torch_embedder = embedders
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)  # far from any face: other activations
    chips = np.concatenate([torch_embedder.chips(*faces[0]), noise])
    # dlib's own entry point for 150x150 chips aligned as get_face_chips does
    reference = np.stack([np.asarray(dlib_embedder.model.compute_face_descriptor(c), np.float32) for c in chips])
    assert np.abs(torch_embedder.embed_chips(chips) - reference).max() <= MAX_ABS_DIFF


def test_batches_match_single_faces(embedders, faces):
    _, torch_embedder = embedders
    chips = np.concatenate([torch_embedder.chips(image, lm) for image, lm in faces])
    single = np.stack([torch_embedder.embed_chips(c[None])[0] for c in chips])
    small_batches = TorchFaceEmbedder(batch_size=4)  # 11 chips -> batches of 4, 4, 3
    np.testing.assert_allclose(small_batches.embed_chips(chips), single, atol=1e-5)
    np.testing.assert_allclose(torch_embedder.embed_chips(chips), single, atol=1e-5)
    # embed_many over several faces of one frame == embed of each
    image, lm = faces[0]
    many = torch_embedder.embed_many(image, np.stack([lm, lm + 3.0]))
    assert many.shape == (2, 128)
    np.testing.assert_allclose(many[0], torch_embedder.embed(image, lm), atol=1e-5)
    np.testing.assert_allclose(many[1], torch_embedder.embed(image, lm + 3.0), atol=1e-5)


def test_input_validation(embedders, faces):
    _, torch_embedder = embedders
    image, lm = faces[0]
    assert torch_embedder.embed_many(image, np.zeros((0, 68, 2))).shape == (0, 128)
    assert torch_embedder.embed_chips(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(UserError):
        torch_embedder.embed(image, lm[:5])
    with pytest.raises(UserError):
        torch_embedder.embed_chips(np.zeros((1, 150, 150, 3), np.float32))
    with pytest.raises(UserError):
        torch_embedder.embed_chips(np.zeros((1, 112, 112, 3), np.uint8))


def _assert_user_error(path, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        load_dlib_face_resnet(path)
    message = str(info.value)
    assert "\n" not in message and fragment in message, message


def test_corrupt_or_wrong_files_give_user_error(tmp_path):
    data = _model_path().read_bytes()
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(data[: len(data) // 2])
    _assert_user_error(truncated, "ends early")
    renamed = tmp_path / "renamed.dat"  # the loss layer's name, first thing in the file
    renamed.write_bytes(data.replace(b"loss_metric_2", b"loss_metric_9", 1))
    _assert_user_error(renamed, "loss layer")
    trailing = tmp_path / "trailing.dat"
    trailing.write_bytes(data + b"\0\0")
    _assert_user_error(trailing, "unexpected bytes")
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    _assert_user_error(empty, "ends early")
    # Another dlib DNN (the MMOD face detector): same serialization, different network.
    _assert_user_error(_model_path("dlib_mmod_detector"), "not dlib's face recognition ResNet")
    _assert_user_error(tmp_path / "missing.dat", "cannot read")
    with pytest.raises(UserError):
        TorchFaceEmbedder(model_path=tmp_path / "missing.dat")


@pytest.mark.gpu
def test_cuda_matches_cpu(embedders, faces):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _, cpu_embedder = embedders
    chips = np.concatenate([cpu_embedder.chips(image, lm) for image, lm in faces])
    cuda = TorchFaceEmbedder(device="cuda")
    # TF32 is switched off inside embed_chips, so CUDA stays within float32 rounding.
    assert np.abs(cuda.embed_chips(chips) - cpu_embedder.embed_chips(chips)).max() <= 1e-4


def test_dlib_embedder_cuts_and_embeds_chips_like_embed_many(embedders, faces):
    """The guard batches any embedder through chips + embed_chips; for dlib's own it must give
    exactly what embed_many gives."""
    image, landmarks = faces[0]
    dlib_embedder = embedders[0]
    chips = dlib_embedder.chips(image, landmarks[None])
    assert chips.shape == (1, 150, 150, 3) and chips.dtype == np.uint8
    np.testing.assert_array_equal(dlib_embedder.embed_chips(chips), dlib_embedder.embed_many(image, landmarks[None]))
    assert dlib_embedder.embed_chips(chips[:0]).shape == (0, 128)


def test_full_float32_switch_is_held_by_one_thread_and_restored_after_errors():
    """The precision flags are process-wide: the guard's thread and the pipeline must not
    interleave their set/restore. Exercised with a stand-in CUDA device (only flags change)."""
    import threading

    from streamanon.faces import resnet_torch

    class FakeCuda:
        type = "cuda"

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = (conv.fp32_precision, matmul.fp32_precision)
    entered, release, other_inside = threading.Event(), threading.Event(), threading.Event()

    def hold():
        with resnet_torch.ieee_float32(FakeCuda()):
            entered.set()
            release.wait(5)

    def try_enter():
        with resnet_torch.ieee_float32(FakeCuda()):
            other_inside.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(5) and (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    other = threading.Thread(target=try_enter)
    other.start()
    assert not other_inside.wait(0.3), "a second thread entered while the first held the switch"
    release.set()
    holder.join(5)
    other.join(5)
    assert other_inside.is_set()
    with pytest.raises(ValueError):
        with resnet_torch.ieee_float32(FakeCuda()):
            raise ValueError("a failing embedding")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
