"""Generator, its conditions and the inference runtime, on small planted inputs (CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from streamanon import models  # noqa: E402
from streamanon.errors import ModelUnavailable, UserError  # noqa: E402
from streamanon.generate.condition import (  # noqa: E402
    LANDMARK_GROUPS,
    landmark_heatmaps,
    masked_input,
    track_latent,
    track_latents,
)
from streamanon.generate.model import (  # noqa: E402
    Discriminator,
    Generator,
    GeneratorConfig,
    LandmarkRegressor,
    count_parameters,
)
from streamanon.generate.runtime import (  # noqa: E402
    COMPILED_MAX_BATCH,
    EAGER_MAX_BATCH,
    GeneratorRuntime,
    load_generator,
)
from streamanon.train.checkpoint import save_checkpoint  # noqa: E402
from streamanon.types import AlignedFace  # noqa: E402

TINY = GeneratorConfig(resolution=32, base_channels=8, max_channels=32, latent_dim=16, w_dim=32)


def _face_landmarks(size: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A plausible frontal 68-point layout scaled to the crop, jittered per sample."""
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([0.5 - 0.32 * np.cos(t), 0.45 + 0.4 * np.sin(t)], 1)
    brows = np.stack([np.linspace(0.25, 0.75, 10), np.full(10, 0.33)], 1)
    nose = np.stack([np.full(4, 0.5), np.linspace(0.4, 0.55, 4)], 1)
    nose_low = np.stack([np.linspace(0.43, 0.57, 5), np.full(5, 0.6)], 1)
    eyes = np.stack([np.concatenate([np.linspace(0.3, 0.42, 6), np.linspace(0.58, 0.7, 6)]), np.full(12, 0.42)], 1)
    u = np.linspace(0, 2 * np.pi, 20)
    lips = np.stack([0.5 - 0.1 * np.cos(u), 0.72 + 0.04 * np.sin(u)], 1)
    points = np.concatenate([jaw, brows, nose, nose_low, eyes, lips]) * (size - 1)
    rng = np.random.default_rng(seed)
    return (points[None] + rng.normal(0, 0.5, (batch, 68, 2))).astype(np.float32)


def _inputs(config: GeneratorConfig, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = config.resolution
    crop = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
    mask = torch.zeros(batch, 1, s, s)
    mask[:, :, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = 1.0
    landmarks = torch.from_numpy(_face_landmarks(s, batch, seed))
    z = torch.randn(batch, config.latent_dim, generator=g)
    return crop, mask, landmarks, z


# ------------------------------------------------------------------ conditions


def test_heatmaps_peak_at_landmarks_in_both_modes():
    size = 32
    lm = torch.from_numpy(_face_landmarks(size, 2)).round()  # integer points: peaks are exactly 1
    points = landmark_heatmaps(lm, size, sigma=1.0, mode="points")
    groups = landmark_heatmaps(lm, size, sigma=1.0, mode="groups")
    assert points.shape == (2, 68, size, size) and points.dtype == torch.float32
    assert groups.shape == (2, len(LANDMARK_GROUPS), size, size)
    x, y = int(lm[0, 30, 0]), int(lm[0, 30, 1])  # nose tip
    assert points[0, 30, y, x].item() == pytest.approx(1.0)
    assert points[0, 30, y, x + 2].item() == pytest.approx(np.exp(-2.0), rel=1e-4)  # 2 px at sigma 1
    # Nose tip belongs to the nose-bridge group (27..30): that channel peaks there too.
    assert groups[0, 3, y, x].item() == pytest.approx(1.0)
    # Each group channel is the max over its own points only.
    for c, (a, b) in enumerate(LANDMARK_GROUPS):
        torch.testing.assert_close(groups[:, c], points[:, a:b].amax(dim=1))
    with pytest.raises(ValueError):
        landmark_heatmaps(lm[:, :5], size, 1.0)


def test_masked_input_removes_every_face_pixel():
    crop = torch.rand(1, 3, 16, 16) * 2 - 1
    crop[0, :, 5, 5] = float("nan")  # even NaN inside the mask must not get through
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 0.3  # soft mask values count as face
    out = masked_input(crop, mask)
    assert torch.all(out[..., 4:12, 4:12] == 0)
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[4:12, 4:12] = False
    assert torch.equal(out[..., outside], crop[..., outside])


def test_track_latent_is_fixed_per_track_and_differs_between_tracks():
    a = track_latent(7, seed=0, dim=64)
    assert a.shape == (64,) and a.dtype == np.float32
    assert np.array_equal(a, track_latent(7, seed=0, dim=64))
    assert not np.allclose(a, track_latent(8, seed=0, dim=64))
    assert not np.allclose(a, track_latent(7, seed=1, dim=64))
    assert np.isfinite(track_latent(-3, seed=0, dim=8)).all()  # negative ids are fine
    codes = track_latents([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0, 64)
    assert abs(float(codes.mean())) < 0.2 and 0.8 < float(codes.std()) < 1.2  # standard normal


# ------------------------------------------------------------------ networks


def test_generator_has_at_most_8m_parameters_at_128():
    config = GeneratorConfig()
    assert config.resolution == 128
    n = count_parameters(Generator(config))
    assert 1_000_000 < n <= 8_000_000, n


def test_generator_output_shape_and_context_is_the_input():
    torch.manual_seed(0)
    g = Generator(TINY).eval()
    crop, mask, landmarks, z = _inputs(TINY)
    with torch.no_grad():
        out = g(crop, mask, landmarks, z)
        raw = g(crop, mask, landmarks, z, compose=False)
    assert out.shape == crop.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    outside = mask == 0
    assert torch.equal(out[outside.expand_as(out)], crop[outside.expand_as(crop)])
    inside = (mask > 0).expand_as(out)
    assert torch.equal(out[inside], raw[inside])


def test_pixels_inside_the_mask_never_influence_the_output():
    """Planted property: the original face is invisible to the generator."""
    torch.manual_seed(0)
    g = Generator(TINY).eval()
    crop, mask, landmarks, z = _inputs(TINY)
    other = crop.clone()
    inside = (mask > 0).expand_as(crop)
    other[inside] = torch.rand(int(inside.sum())) * 2 - 1  # a different "face"
    with torch.no_grad():
        a = g(crop, mask, landmarks, z, compose=False)
        b = g(other, mask, landmarks, z, compose=False)
        # Control: a change *outside* the mask does reach the output.
        moved = crop.clone()
        moved[..., 0:4, 0:4] = -moved[..., 0:4, 0:4]
        c = g(moved, mask, landmarks, z, compose=False)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_latent_and_landmarks_change_the_face():
    torch.manual_seed(0)
    g = Generator(TINY).eval()
    crop, mask, landmarks, z = _inputs(TINY, batch=1)
    inside = (mask > 0).expand_as(crop)
    with torch.no_grad():
        base = g(crop, mask, landmarks, z)
        other_z = g(crop, mask, landmarks, torch.randn_like(z))
        other_lm = g(crop, mask, landmarks + 3.0, z)
    assert (base - other_z)[inside].abs().mean() > 1e-3
    assert (base - other_lm)[inside].abs().mean() > 1e-3


def test_half_precision_forward_is_finite_and_close():
    """fp16 safety: activations are clamped and the demodulation runs in float32."""
    torch.manual_seed(0)
    g = Generator(TINY).eval()
    crop, mask, landmarks, z = _inputs(TINY)
    with torch.no_grad():
        ref = g(crop, mask, landmarks, z)
        half = Generator(TINY)
        half.load_state_dict(g.state_dict())
        half = half.half().eval()
        out = half(crop.half(), mask.half(), landmarks, z)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max().item() < 0.05


def test_discriminator_and_regressor_shapes():
    torch.manual_seed(0)
    crop, mask, landmarks, _ = _inputs(TINY, batch=4)
    d = Discriminator(TINY)
    logits = d(crop, mask, landmarks)
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    r = LandmarkRegressor(TINY.resolution, channels=16)
    pred = r(crop)
    assert pred.shape == (4, 68, 2)
    assert (pred >= -0.5).all() and (pred <= TINY.resolution - 0.5).all()  # soft-argmax stays in the crop


# ------------------------------------------------------------------ runtime


def _aligned(config: GeneratorConfig, track_ids, seed: int = 0) -> list[AlignedFace]:
    rng = np.random.default_rng(seed)
    s = config.resolution
    image = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    mask = np.zeros((s, s), np.float32)
    mask[s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = 1.0
    mask[s // 4 - 1, s // 4 : 3 * s // 4] = 0.4  # a soft edge row
    lm = _face_landmarks(s)[0]
    return [AlignedFace(t, image.copy(), np.eye(2, 3), lm.copy(), mask.copy()) for t in track_ids]


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    g = Generator(TINY)
    return save_checkpoint(tmp_path / "generator_tiny.pt", TINY, g, step=0)


def test_runtime_returns_uint8_crops_with_per_track_identities(weights):
    runtime = load_generator(weights, device="cpu", backend="auto")
    assert runtime.backend_name == "eager"  # auto on CPU
    faces = _aligned(TINY, [1, 1, 2])
    out = runtime(faces)
    s = TINY.resolution
    assert out.shape == (3, s, s, 3) and out.dtype == np.uint8
    inside = faces[0].mask > 0
    assert np.array_equal(out[0], out[1])  # same track, same input -> same face
    assert np.abs(out[0][inside].astype(int) - out[2][inside].astype(int)).mean() > 0.5  # another track
    # Outside the face region the crop is passed through untouched.
    assert np.array_equal(out[0][~inside], faces[0].image[~inside])
    # The same track keeps its face on a later call (and in a fresh runtime).
    again = load_generator(weights, backend="eager")(_aligned(TINY, [2]))
    assert np.array_equal(again[0], out[2])
    # Another seed gives another identity to the same track id.
    reseeded = load_generator(weights, backend="eager", seed=5)(_aligned(TINY, [2]))
    assert not np.array_equal(reseeded[0], out[2])
    assert runtime([]).shape == (0, s, s, 3)


def test_runtime_can_keep_its_faces_on_its_device(weights):
    runtime = load_generator(weights, device="cpu", backend="eager")
    faces = _aligned(TINY, [1, 2])
    kept = runtime.generate_faces(faces)
    assert isinstance(kept, torch.Tensor) and kept.dtype == torch.uint8 and kept.device == runtime.device
    assert np.array_equal(kept.numpy(), runtime(faces))
    assert tuple(runtime.generate_faces([]).shape) == (0, TINY.resolution, TINY.resolution, 3)
    # Crops and masks the caller has uploaded already (the device compositor): the same faces, and
    # the caller's tensors are left as they were (the photometric steps read them next).
    images = torch.from_numpy(np.stack([face.image for face in faces]))
    masks = torch.from_numpy(np.stack([face.mask for face in faces]))
    before = images.clone(), masks.clone()
    assert torch.equal(runtime.generate_faces(faces, uploaded=(images, masks)), kept)
    assert torch.equal(images, before[0]) and torch.equal(masks, before[1])
    with pytest.raises(ValueError, match="do not match"):
        runtime.generate_faces(faces, uploaded=(images[:1], masks[:1]))


def test_runtime_output_ignores_the_original_face(weights):
    runtime = load_generator(weights, backend="eager")
    faces = _aligned(TINY, [3])
    changed = _aligned(TINY, [3])
    inside = changed[0].mask > 0
    changed[0].image[inside] = 255 - changed[0].image[inside]
    assert np.array_equal(runtime(faces), runtime(changed))


def test_runtime_rejects_bad_requests(weights, tmp_path):
    with pytest.raises(UserError, match="backend"):
        load_generator(weights, backend="onnx")
    with pytest.raises(UserError, match="tensorrt"):
        load_generator(weights, backend="tensorrt")  # CPU: no TensorRT
    runtime = load_generator(weights, backend="eager")
    with pytest.raises(UserError, match="crop_size"):
        runtime(_aligned(GeneratorConfig(resolution=64), [1]))
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a"):
        load_generator(bogus)


def test_generator_runs_one_call_at_a_time(weights):
    """CUDA-graph and TensorRT runs reuse static buffers; the identity guard's thread and the
    pipeline share one runtime, so each network call holds the runtime's lock."""
    runtime = load_generator(weights, backend="eager")
    network, held = runtime._run, []

    def watched(*args):
        held.append(runtime._lock.locked())
        return network(*args)

    runtime._run = watched
    runtime(_aligned(TINY, [1, 2]))
    assert held == [True] and not runtime._lock.locked()


def test_compiled_backends_see_only_the_batch_sizes_compiled_at_load(weights, monkeypatch, caplog):
    """A stream must never stop to compile for a face count it has not met: every padded size is
    compiled when the generator loads, and larger batches run in chunks of the largest."""
    warmed = []
    monkeypatch.setattr(GeneratorRuntime, "warmup", lambda self, sizes=None: warmed.append(list(sizes or [1])))
    # As in a fresh process: the compile backend picks streamanon's folder (the setenv makes the
    # teardown restore what was there before, since loading sets the variable).
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    compiled = load_generator(weights, backend="compile")
    assert compiled.max_batch == COMPILED_MAX_BATCH == 8 and warmed == [[1, 2, 4, 8]]
    # A first start (nothing compiled kept yet) says that it will take a while; a later one does not.
    assert "a first start takes a minute" in caplog.text and "1, 2, 4, 8 faces" in caplog.text
    kept = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    kept.mkdir(parents=True, exist_ok=True)
    (kept / "kernel").write_text("compiled before")
    caplog.clear()
    load_generator(weights, backend="compile")
    assert "first start" not in caplog.text
    assert load_generator(weights, backend="eager").max_batch == EAGER_MAX_BATCH  # the guard's 32 in one call
    assert load_generator(weights, backend="compile", max_batch=4).buckets == [1, 2, 4]
    # The compiled network is watched, running the same module eagerly: which sizes reach it.
    network, seen = compiled.module, []

    def watched(crop, *rest):
        seen.append(crop.shape[0])
        return network(crop, *rest)

    compiled._run = watched
    faces = _aligned(TINY, list(range(1, 12)))
    assert np.array_equal(compiled(faces), load_generator(weights, backend="eager")(faces))
    assert seen == [8, 4]  # 11 faces: a chunk of 8, then 3 padded to 4
    from streamanon.generate.export_cli import DEFAULT_MAX_BATCH

    assert DEFAULT_MAX_BATCH == COMPILED_MAX_BATCH  # `streamanon export` builds the engines the pipeline uses


def test_eager_twin_shares_the_weights_and_gives_the_same_faces(weights):
    """The identity guard's thread runs a compiled runtime's module eagerly, with its own lock."""
    eager = load_generator(weights, backend="eager")
    assert eager.eager_twin() is eager
    compiled = load_generator(weights, backend="compile", warmup=False)  # not compiled until first used
    twin = compiled.eager_twin()
    assert twin.backend_name == "eager" and twin.module is compiled.module and twin._lock is not compiled._lock
    same = ("device", "dtype", "seed", "model_hash")
    assert [getattr(twin, name) for name in same] == [getattr(eager, name) for name in same]
    faces = _aligned(TINY, [1, 2, 3])
    assert np.array_equal(twin(faces), eager(faces))
    with compiled._lock:  # a compiled call in progress on another thread does not hold the twin up
        assert twin(faces[:1]).shape == (1, TINY.resolution, TINY.resolution, 3)


def test_missing_weights_raise_model_unavailable_with_how_to(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "PACKAGE_WEIGHTS", tmp_path / "none")
    monkeypatch.setenv("STREAMANON_MODELS", str(tmp_path / "empty"))
    with pytest.raises(ModelUnavailable) as info:
        load_generator(None)
    message = str(info.value)
    assert "reinstall" in message and "--weights" in message and "\n" not in message
    with pytest.raises(ModelUnavailable):
        load_generator(tmp_path / "missing.pt")


def test_importing_streamanon_does_not_import_torch():
    code = "import sys, streamanon, streamanon.generate, streamanon.train; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])  # fmt: skip
def test_shipped_generator_compiles_and_matches_eager(device, monkeypatch):
    """torch.compile takes the shipped appearance generator whole (fullgraph): its spline warp
    keeps the guard's de-duplication out of the graph, where the count would be data-dependent."""
    import shutil

    if device == "cpu" and not shutil.which("c++"):
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    faces_per_batch = 1 if device == "cpu" else 3  # one CPU compile (~40 s); CUDA: padded to the batch-4 graph
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # restored after the test, which sets it
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")  # as in a fresh process
    eager = load_generator(None, device=device, backend="eager")
    # Compiled when first used: one size here (loading with warmup compiles all four, 1-8).
    compiled = load_generator(None, device=device, backend="compile", warmup=False)
    assert compiled.backend_name == "compile"
    faces = _aligned(eager.config, list(range(1, faces_per_batch + 1)))
    a, b = eager(faces), compiled(faces)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 2
    # Its kernels are kept in streamanon's cache folder (not /tmp), for the next start.
    from streamanon.models import cache_dir

    kept = cache_dir() / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(kept) and any(path.is_file() for path in kept.rglob("*"))


# ------------------------------------------------------------------ GPU backends (skipped on CPU machines)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_backend_matches_eager_on_cuda(weights):
    eager = load_generator(weights, device="cuda", backend="eager")
    compiled = load_generator(weights, device="cuda", backend="compile", warmup=False)  # one compile: size 4
    assert compiled.backend_name == "compile" and eager.dtype == torch.float16
    faces = _aligned(TINY, [1, 2, 3])  # 3 faces run padded to the batch-4 graph
    a, b = eager(faces), compiled(faces)
    assert a.shape == b.shape == (3, TINY.resolution, TINY.resolution, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # fp16 kernels may round differently


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tensorrt_engines_are_cached_by_key(weights, tmp_path):
    pytest.importorskip("torch_tensorrt")
    from streamanon.generate.runtime import build_engines

    files = build_engines(weights, batch_sizes=[1, 3], max_batch=4, engine_dir=tmp_path)
    assert [f.name.split("-b")[1].split("-")[0] for f in files] == ["1", "4"]
    assert all(f.is_file() for f in files)
    assert all(f"-r{TINY.resolution}-" in f.name and "-fp16-" in f.name for f in files)
    runtime = load_generator(weights, device="cuda", backend="tensorrt", max_batch=4, engine_dir=tmp_path)
    faces = _aligned(TINY, [1, 2, 3])
    eager = load_generator(weights, device="cuda", backend="eager")(faces)
    assert np.abs(runtime(faces).astype(int) - eager.astype(int)).max() <= 3
    assert sorted(tmp_path.iterdir()) == sorted(files)  # loaded from the cache, nothing rebuilt
