"""FaceCompositor with the shipped generator: the host and the device path give the same frame.

Needs neither dlib nor video I/O, so the CUDA variant runs on the GPU machine too (it has the
CuPy photometric backend but no dlib)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from streamanon.config import PhotometricConfig  # noqa: E402
from streamanon.faces.align import face_mask, template  # noqa: E402
from streamanon.generate.compose import FaceCompositor, composites_on_device  # noqa: E402
from streamanon.generate.guard import postprocessings  # noqa: E402
from streamanon.generate.runtime import load_generator  # noqa: E402
from streamanon.photometric import get_backend  # noqa: E402
from streamanon.types import AlignedFace  # noqa: E402

S = 128


def _scene(seed: int = 0, off_frame: bool = False, grain: float = 0.0) -> tuple[np.ndarray, list[AlignedFace]]:
    """A smooth 320x240 frame and three faces on it, two of them overlapping, one cut by the edge;
    with ``off_frame``, a fourth one between them that lands entirely outside the frame; ``grain``:
    the frame's sensor noise (grey levels)."""
    rng = np.random.default_rng(seed)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (0, 0), 4)
    if grain:
        frame = np.clip(np.rint(frame + rng.normal(0, grain, frame.shape)), 0, 255).astype(np.uint8)
    landmarks = template(S).astype(np.float32)
    mask = face_mask(landmarks, S)
    faces = []
    places = [(80, 100, 1.3, 0.1), (130, 120, 1.0, -0.2), (300, 40, 0.8, 0.0)]
    if off_frame:
        places.insert(1, (900, -500, 1.0, 0.0))
    for track_id, (cx, cy, scale, angle) in enumerate(places):
        crop = cv2.GaussianBlur(rng.integers(60, 200, (S, S, 3), dtype=np.uint8), (0, 0), 2)
        linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        matrix = np.concatenate([linear, (np.array([64.0, 64.0]) - linear @ [cx, cy])[:, None]], axis=1)
        faces.append(AlignedFace(track_id, crop, matrix, landmarks.copy(), mask.copy()))
    return frame, faces


def _compositor(device: str, composite: str) -> FaceCompositor:
    """The shipped generator (eager) with the default photometric steps, pasting on ``composite``."""
    generator = load_generator(None, device=device, backend="eager")
    return FaceCompositor(generator, postprocessings(get_backend(device), PhotometricConfig()), 0.25, composite)


def _compose(device: str, composite: str, ways: list[str], off_frame: bool = False, grain: float = 0.0,
             frame_index: int = 0) -> np.ndarray:  # fmt: skip
    compositor = _compositor(device, composite)
    generator = compositor.generator
    frame, faces = _scene(off_frame=off_frame, grain=grain)
    latents = generator.latents([face.track_id for face in faces]).cpu().numpy()
    out = frame.copy()
    compositor(frame, out, faces, latents, ways, frame_index=frame_index)
    return out


def test_both_paths_give_faces_on_a_grainy_frame_the_same_grain():
    from streamanon.noise import noise_levels

    frame, faces = _scene(grain=5.0)
    host = _compose("cpu", "host", ["full"] * 3, grain=5.0)
    device = _compose("cpu", "device", ["full"] * 3, grain=5.0)
    difference = np.abs(host.astype(int) - device)
    assert difference.max() <= 2 and difference.mean() < 0.05  # two roundings on the host, one here
    # The grain is the frame's: measured on the first face's opaque part, away from the others.
    inside = np.zeros(frame.shape[:2], np.uint8)
    cv2.circle(inside, (80, 100), 14, 1, -1)
    levels = noise_levels(host, inside.astype(bool))[3]
    assert levels == pytest.approx(noise_levels(frame, inside.astype(bool))[3], rel=0.2)
    plain = _compositor("cpu", "host")
    plain.match_noise = False
    latents = plain.generator.latents([face.track_id for face in faces]).cpu().numpy()
    smooth = frame.copy()
    plain(frame, smooth, faces, latents, ["full"] * 3)
    assert noise_levels(smooth, inside.astype(bool))[3] < 0.7 * levels
    assert not np.array_equal(host, _compose("cpu", "host", ["full"] * 3, grain=5.0, frame_index=1))  # new grain


def test_device_path_on_cpu_tensors_matches_the_host_path():
    frame, _ = _scene()
    for ways in (["full"] * 3, ["full", "strict", "full"]):
        host = _compose("cpu", "host", ways)
        device = _compose("cpu", "device", ways)
        assert np.abs(host.astype(int) - device).max() <= 1
        assert (device != frame).any(axis=-1).sum() > 5000
        assert np.array_equal(device[200:, :40], frame[200:, :40])  # far from every face


def test_a_face_off_the_frame_is_skipped_by_both_paths():
    """The device path places faces from their masks and pastes the rest as one batch: a face that
    lands nowhere in between must not shift the others' crops or alphas."""
    host = _compose("cpu", "host", ["full"] * 4, off_frame=True)
    device = _compose("cpu", "device", ["full"] * 4, off_frame=True)
    assert np.abs(host.astype(int) - device).max() <= 1
    compositor = _compositor("cpu", "device")
    generator = compositor.generator
    frame, faces = _scene(off_frame=True)
    latents = generator.latents([face.track_id for face in faces]).cpu().numpy()
    without = frame.copy()
    compositor(frame, without, faces[:1] + faces[2:], np.delete(latents, 1, axis=0), ["full"] * 3)
    assert np.array_equal(device, without)


def test_a_frame_already_on_the_device_is_pasted_into_and_gives_the_same_pixels():
    """The pipeline uploads each frame once (for the PyTorch detector) and hands it over: the paste
    goes into that tensor instead of an uploaded region, with the same result."""
    compositor = _compositor("cpu", "device")
    generator = compositor.generator
    frame, faces = _scene()
    before = frame.copy()
    latents = generator.latents([face.track_id for face in faces]).cpu().numpy()
    uploaded_region, given_frame = frame.copy(), frame.copy()
    compositor(frame, uploaded_region, faces, latents, ["full"] * 3)
    tensor = torch.from_numpy(frame).clone()
    compositor(frame, given_frame, faces, latents, ["full"] * 3, frame=tensor)
    assert np.array_equal(given_frame, uploaded_region)
    assert (given_frame != before).any(axis=-1).sum() > 5000
    assert np.array_equal(frame, before)  # the input image is never written
    assert not torch.equal(tensor, torch.from_numpy(before))  # the device copy is


def test_the_input_frame_is_never_written_even_when_the_faces_span_its_width():
    """The region under all faces goes to the device as a copy: spanning whole rows it is one
    contiguous block of the input, which a tensor sharing its memory would have pasted into."""
    compositor = _compositor("cpu", "device")
    generator = compositor.generator
    frame, faces = _scene()
    for face, cx in zip(faces[:2], (0.0, 320.0)):  # one face cut by the left edge, one by the right
        face.matrix[:, 2] = np.array([64.0, 64.0]) - face.matrix[:, :2] @ [cx, 120.0]
    before = frame.copy()
    latents = generator.latents([face.track_id for face in faces[:2]]).cpu().numpy()
    out = frame.copy()
    compositor(frame, out, faces[:2], latents, ["full"] * 2)
    assert np.array_equal(frame, before)
    assert (out[:, :10] != before[:, :10]).any() and (out[:, -10:] != before[:, -10:]).any()


def test_placing_from_the_mask_pastes_the_same_pixels_as_placing_from_the_alpha():
    """Both paths (and the guard's views) place a face from its mask's support box, once, instead of
    searching its alpha at every paste: the same region, the same pixels."""
    from streamanon.composite import paste_aligned, paste_placed

    compositor = _compositor("cpu", "host")
    frame, faces = _scene(off_frame=True)
    for face in faces:
        alpha = compositor.alpha(face)
        by_alpha, by_mask = frame.copy(), frame.copy()
        paste_aligned(by_alpha, face.image, face.matrix, alpha)
        placement = compositor.placement(face, frame.shape)
        if placement is not None:
            paste_placed(by_mask, face.image, *placement, alpha)
        assert np.array_equal(by_mask, by_alpha)
    assert compositor.placement(faces[1], frame.shape) is None  # the face off the frame


def test_where_faces_are_composited():
    assert composites_on_device("auto", torch.device("cuda")) and not composites_on_device("auto", torch.device("cpu"))
    assert composites_on_device("device", torch.device("cpu")) and not composites_on_device("host", torch.device("cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_path_matches_the_cuda_host_path():
    pytest.importorskip("cupy")
    frame, _ = _scene()
    ways = ["full", "strict", "full"]
    device = _compose("cuda", "device", ways)  # CuPy photometric on tensors, torch paste
    host = _compose("cuda", "host", ways)  # CuPy photometric on host arrays, OpenCV paste
    assert np.abs(host.astype(int) - device).max() <= 1
    on_cpu = _compose("cpu", "host", ways)  # float16 generator and CUDA kernels vs the CPU reference
    assert np.abs(on_cpu.astype(int) - device).mean() < 1.0
