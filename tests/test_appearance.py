"""Appearance generator: thin-plate warps, the model's contract, fitting on real faces, the
identity guard and the validation command (CPU)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from conftest import prepare_faces  # noqa: E402
from test_generate import _face_landmarks  # noqa: E402

from streamanon.config import PhotometricConfig  # noqa: E402
from streamanon.errors import UserError  # noqa: E402
from streamanon.faces.align import face_mask  # noqa: E402
from streamanon.generate.appearance import AppearanceConfig, AppearanceGenerator  # noqa: E402
from streamanon.generate.guard import BATCH, BOLD_SCALE, IdentityChoice, IdentityGuard, postprocessings  # noqa: E402
from streamanon.generate.runtime import load_generator  # noqa: E402
from streamanon.generate.warp import control_points, warp_points  # noqa: E402
from streamanon.photometric import reference  # noqa: E402
from streamanon.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from streamanon.train.cli import appearance_command, card_command, detail_command, validate_command  # noqa: E402
from streamanon.train.dataset import FaceShardDataset  # noqa: E402
from streamanon.train.detail import GRAIN_BAND, SHARPEN_BAND, band_power, with_detail  # noqa: E402
from streamanon.types import AlignedFace  # noqa: E402

SIZE = 64

# ------------------------------------------------------------------ warp


def test_warp_moves_what_lies_at_each_landmark_onto_its_target():
    source = torch.from_numpy(_face_landmarks(SIZE, 1, seed=0))
    target = source.clone()
    target[:, 48:68, 1] += 3.0  # mouth down
    target[:, 30, 0] += 2.0  # nose tip right
    image = torch.zeros(1, 1, SIZE, SIZE)
    planted = (30, 48, 54, 36)
    for i in planted:
        x, y = source[0, i].round().long()
        image[0, 0, y, x] = 1.0
    out = warp_points(image, control_points(source, SIZE), control_points(target, SIZE))[0, 0]
    for i in planted:
        x, y = target[0, i]
        window = out[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4]
        dy, dx = np.unravel_index(int(window.argmax()), window.shape)
        # The planted pixel's mass is now centred within a pixel of the target point.
        assert abs(int(x) - 3 + dx - float(x)) <= 1.0 and abs(int(y) - 3 + dy - float(y)) <= 1.0, i
        assert window.max() > 0.2


def test_warp_between_equal_layouts_is_the_identity():
    points = control_points(torch.from_numpy(_face_landmarks(SIZE, 2, seed=1)), SIZE)
    image = torch.rand(2, 3, SIZE, SIZE)
    out = warp_points(image, points, points)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert (out - image).abs().max() < 1e-3


def test_warp_of_repeated_layouts_equals_warping_each_alone(monkeypatch):
    """Candidates on the same landmarks share one spline (the guard's batches); mixed batches
    still get each face's own."""
    import streamanon.generate.warp as warp

    layouts = torch.from_numpy(_face_landmarks(SIZE, 2, seed=3))
    source = control_points(layouts[[0, 0, 0, 1]], SIZE)
    target = control_points(layouts[[1, 1, 1, 0]], SIZE)
    images = torch.rand(4, 3, SIZE, SIZE)
    solved = []
    real = warp._sampling_grid
    monkeypatch.setattr(warp, "_sampling_grid", lambda s, t, n, step: solved.append(len(s)) or real(s, t, n, step))
    together = warp_points(images, source, target)
    assert solved == [2]  # two distinct layouts for four faces
    for i in range(4):
        alone = warp_points(images[i : i + 1], source[i : i + 1], target[i : i + 1])
        # float32 solves batched differently round differently (~1e-3 of the intensity range);
        # a face given another face's spline would be off by tenths.
        assert (together[i] - alone[0]).abs().max() < 5e-3, i


def test_warp_on_a_coarse_lattice_stays_close_to_the_exact_spline():
    """Rendering evaluates the spline every 2 px: the image it gives differs from the exact
    warp by a small fraction of the intensity range, yet the lattice does change something."""
    layouts = torch.from_numpy(_face_landmarks(SIZE, 2, seed=4))
    source, target = control_points(layouts[[0, 1]], SIZE), control_points(layouts[[1, 0]], SIZE)
    # A smooth image with structure at several scales, like a face texture.
    axis = torch.linspace(0, 6.0, SIZE)
    image = (torch.sin(axis)[None, :] * torch.cos(1.7 * axis)[:, None]).expand(2, 3, -1, -1).contiguous()
    exact = warp_points(image, source, target)
    coarse = warp_points(image, source, target, lattice_step=2)
    difference = (coarse - exact).abs()
    assert 0 < float(difference.mean()) < 5e-3  # of a range of 2
    assert float(difference.max()) < 0.1
    assert torch.equal(warp_points(image, source, target, lattice_step=1), exact)
    with pytest.raises(ValueError, match="lattice_step"):
        warp_points(image, source, target, lattice_step=0)


# ------------------------------------------------------------------ the model's contract


def _planted_model(seed: int = 0) -> AppearanceGenerator:
    """A small model with random (not fitted) statistics: enough for the calling contract."""
    config = AppearanceConfig(resolution=SIZE, latent_dim=6)
    model = AppearanceGenerator(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.mean_landmarks.copy_(torch.from_numpy(_face_landmarks(SIZE, 1, seed=9)[0]))
        model.mean_texture.copy_(torch.rand(3, SIZE, SIZE, generator=g) * 2 - 1)
        model.basis.copy_((torch.randn(6, 3, SIZE, SIZE, generator=g) * 0.2).half())
        model.shape_weights.copy_(torch.randn(136, 6, generator=g))
    return model.eval()


def _inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    crop = torch.rand(batch, 3, SIZE, SIZE, generator=g) * 2 - 1
    landmarks = torch.from_numpy(_face_landmarks(SIZE, batch, seed))
    mask = torch.from_numpy(np.stack([face_mask(lm, SIZE) for lm in landmarks.numpy()]))[:, None]
    z = torch.randn(batch, 6, generator=g)
    return crop, mask, landmarks, z


def test_output_keeps_context_and_ignores_the_original_face():
    model = _planted_model()
    crop, mask, landmarks, z = _inputs()
    out = model(crop, mask, landmarks, z)
    assert out.shape == crop.shape and torch.isfinite(out).all()
    outside = mask.expand_as(crop) == 0
    assert torch.equal(out[outside], crop[outside])
    changed = torch.where(mask > 0, torch.rand_like(crop), crop)
    assert torch.equal(model(changed, mask, landmarks, z), out)


def test_latent_picks_the_identity_and_landmarks_move_the_face():
    model = _planted_model()
    crop, mask, landmarks, z = _inputs(batch=1)
    inside = mask.expand_as(crop) > 0
    base = model(crop, mask, landmarks, z)
    assert torch.equal(model(crop, mask, landmarks, z), base)  # deterministic
    other = model(crop, mask, landmarks, -z)
    assert (other - base)[inside].abs().mean() > 0.01
    moved = landmarks.clone()
    moved[:, 48:68, 1] += 2.0
    assert (model(crop, mask, moved, z) - base)[inside].abs().mean() > 0.001


def test_checkpoint_round_trip_through_the_runtime(tmp_path):
    model = _planted_model()
    path = save_checkpoint(tmp_path / "appearance.pt", model.config, model, step=0)
    payload = load_checkpoint(path)
    assert payload["architecture"] == "appearance"
    assert payload["generator_ema"]["basis"].dtype == torch.float16  # halves the shipped file
    runtime = load_generator(path, backend="eager", seed=3)
    crop, mask, landmarks, _ = _inputs(batch=1)
    image = ((crop[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    face = AlignedFace(7, image, np.eye(2, 3), landmarks[0].numpy(), mask[0, 0].numpy())
    out = runtime([face])
    code = runtime.latents([7])
    with torch.no_grad():
        expected = model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1, mask, landmarks, code)
    expected = ((expected.clamp(-1, 1) + 1) * 127.5).round().byte()[0].permute(1, 2, 0).numpy()
    assert np.array_equal(out[0], expected)
    # Explicit latents override the track's own.
    assert np.array_equal(runtime([face], latents=code.numpy()), out)
    assert not np.array_equal(runtime([face], latents=-code.numpy()), out)
    with pytest.raises(ValueError, match="latents"):
        runtime([face], latents=np.zeros((1, 5), np.float32))
    payload["architecture"] = "diffusion"
    torch.save(payload, tmp_path / "odd.pt")
    with pytest.raises(UserError, match="architecture 'diffusion'"):
        load_generator(tmp_path / "odd.pt")


# ------------------------------------------------------------------ fine detail (sharpening, grain)


def _grain_model(strength: float = 1.0, fields: int = 8) -> AppearanceGenerator:
    bank = np.random.default_rng(3).standard_normal((fields, SIZE, SIZE)).astype(np.float32) * 0.02
    return with_detail(_planted_model(), bank, sharpen=0.0, grain=strength, sharpen_sigma=1.0, seed=1)


def test_a_model_without_detail_is_unchanged_and_loads_weights_saved_before_detail_existed(tmp_path):
    model = _planted_model()
    assert not any(k.startswith("grain_") for k in model.state_dict())  # the old file layout
    crop, mask, landmarks, z = _inputs()
    texture = model.texture(model.coefficients(landmarks, z))
    assert model.detailed(texture, z) is texture
    plain = with_detail(_grain_model(), None, 0.0, 0.0, 1.0)  # detail stripped again
    assert torch.equal(plain(crop, mask, landmarks, z), model(crop, mask, landmarks, z))


def test_sharpening_leaves_flat_texture_alone_and_steepens_edges():
    model = with_detail(_planted_model(), None, sharpen=1.0, grain=0.0, sharpen_sigma=1.0)
    z = torch.zeros(1, 6)
    flat = torch.full((1, 3, SIZE, SIZE), 0.3)
    assert torch.allclose(model.detailed(flat, z), flat, atol=1e-6)  # replicate padding: no edge effect
    step = torch.where(torch.arange(SIZE) < SIZE // 2, -0.5, 0.5).expand(1, 3, SIZE, SIZE).contiguous()
    sharp = model.detailed(step, z)
    row = sharp[0, 0, SIZE // 2]
    assert row[SIZE // 2] > 0.6 and row[SIZE // 2 - 1] < -0.6  # overshoot either side of the edge
    assert torch.allclose(row[: SIZE // 2 - 4], torch.tensor(-0.5))
    assert torch.allclose(row[SIZE // 2 + 4 :], torch.tensor(0.5))


def test_grain_belongs_to_the_latent_and_keeps_the_banks_statistics():
    model = _grain_model()
    flat = torch.zeros(1, 3, SIZE, SIZE)
    z = torch.randn(1, 6, generator=torch.Generator().manual_seed(5))
    grain = model.detailed(flat, z)
    assert torch.equal(model.detailed(flat, z), grain)  # a track keeps its grain: no flicker
    assert torch.equal(grain[0, 0], grain[0, 2])  # luminance only
    assert (model.detailed(flat, -z) - grain).abs().mean() > 0.01  # another identity, another grain
    assert torch.allclose(model.detailed(flat, 1.5 * z), grain, atol=1e-6)  # bolder latents: the same grain
    # Unit-norm mixing of independent fields: every latent's grain has the fields' spread.
    many = model.detailed(flat.expand(200, -1, -1, -1), torch.randn(200, 6, generator=torch.Generator().manual_seed(6)))
    expected = 2.0 * model.grain_bank.float().std()  # [0, 1] luminance -> [-1, 1] texture units
    assert abs(float(many[:, 0].std()) / float(expected) - 1.0) < 0.1
    assert torch.isfinite(model.detailed(flat, torch.zeros(1, 6))).all()  # the zero latent: no grain, no NaN
    weak = with_detail(model, model.grain_bank.float().numpy(), 0.0, 0.5, 1.0, seed=1)
    assert torch.allclose(weak.detailed(flat, z), 0.5 * grain, atol=1e-6)


def test_detail_round_trips_through_a_checkpoint_and_the_runtime(tmp_path):
    model = with_detail(_grain_model(), _grain_model().grain_bank.float().numpy(), 0.8, 1.0, 1.0, seed=1)
    path = save_checkpoint(tmp_path / "detail.pt", model.config, model, step=0)
    runtime = load_generator(path, backend="eager")
    loaded = runtime.module
    assert loaded.config.sharpen == 0.8 and loaded.config.grain == 1.0 and loaded.config.grain_fields == 8
    crop, mask, landmarks, z = _inputs()
    assert torch.equal(loaded(crop, mask, landmarks, z), model(crop, mask, landmarks, z))


def test_the_shipped_generator_draws_faces_with_fitted_detail():
    """The shipped weights carry the detail, and it restores fine structure at real faces' landmarks."""
    shipped = load_generator(None, backend="eager").module
    assert isinstance(shipped, AppearanceGenerator)
    assert shipped.config.sharpen > 0 and shipped.config.grain > 0 and shipped.config.grain_fields > 0
    plain = with_detail(shipped, None, 0.0, 0.0, shipped.config.sharpen_sigma)
    size = shipped.config.resolution
    landmarks = shipped.mean_landmarks[None] + torch.randn(6, 68, 2, generator=torch.Generator().manual_seed(0))
    z = torch.randn(6, shipped.config.latent_dim, generator=torch.Generator().manual_seed(1))
    blank = torch.zeros(6, 3, size, size)

    def power(model):
        with torch.no_grad():
            faces = ((model(blank, blank[:, :1], landmarks, z, compose=False) + 1) / 2).clamp(0, 1)
        bands = band_power(faces.permute(0, 2, 3, 1).numpy(), landmarks.numpy(), (SHARPEN_BAND, GRAIN_BAND))
        return np.median(bands, axis=0)

    gain = power(shipped) / power(plain)  # 1.8 and 4.7 here
    assert gain[0] > 1.5 and gain[1] > 3  # the fit took 0.48 -> 1.04 and 0.09 -> 0.97 of real faces' power


# ------------------------------------------------------------------ fitting on real faces


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepare_faces(tmp_path_factory, SIZE, 24)


@pytest.fixture(scope="module")
def fitted(data_dir, tmp_path_factory):
    """The fit command end to end at smoke size: weights file + summary."""
    out = tmp_path_factory.mktemp("fit") / "appearance_64.pt"
    args = ["--data", str(data_dir), "--out", str(out), "--components", "6", "--min-coverage", "0", "-q"]
    result = CliRunner().invoke(appearance_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "fitted 6 components" in result.output
    return out


def test_fit_summary_and_refusal_to_overwrite(fitted, data_dir):
    fit = json.loads(fitted.with_suffix(".fit.json").read_text())
    assert fit["components"] == 6 and fit["samples"] == 2 * fit["faces"]  # mirrored copies
    assert 0.0 < fit["explained_variance"] <= 1.0 and 0.0 <= fit["shape_explained"] <= 1.0
    again = CliRunner().invoke(appearance_command, ["--data", str(data_dir), "--out", str(fitted), "-q"])
    assert again.exit_code != 0 and "exists" in str(again.exception)


def test_the_fit_matches_real_faces_fine_detail(fitted):
    detail = json.loads(fitted.with_suffix(".fit.json").read_text())["detail"]
    model = load_generator(fitted, backend="eager").module
    assert model.config.sharpen == detail["sharpen"] and model.config.grain == detail["grain"]
    assert detail["sharpen"] > 0 and detail["grain_amplitude_median"] > 0
    for band, before in detail["band_power_before"].items():
        after = detail["band_power_after"][band]
        assert before < 0.8  # the plain components miss fine detail
        assert abs(np.log(after)) < abs(np.log(before))  # the fitted detail comes closer to real faces


def test_detail_command_refits_an_appearance_model_and_refuses_others(fitted, data_dir, tmp_path):
    out = tmp_path / "again.pt"
    args = ["--weights", str(fitted), "--data", str(data_dir), "--out", str(out), "--min-coverage", "0"]
    result = CliRunner().invoke(detail_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "detail: sharpen" in result.output
    fit = json.loads(out.with_suffix(".fit.json").read_text())
    assert fit["components"] == 6 and "detail" in fit  # the appearance fit's summary, with the detail's
    first, again = load_checkpoint(fitted)["generator_ema"], load_checkpoint(out)["generator_ema"]
    assert sorted(first) == sorted(again)
    assert all(torch.equal(first[k], again[k]) for k in first)  # the same seeded fit: the same weights
    refused = CliRunner().invoke(detail_command, args)
    assert refused.exit_code != 0 and "exists" in str(refused.exception)
    from streamanon.generate.model import Generator, GeneratorConfig

    config = GeneratorConfig(resolution=32, base_channels=8, max_channels=16, latent_dim=8, w_dim=16)
    unet = save_checkpoint(tmp_path / "unet.pt", config, Generator(config), step=0)
    args = ["--weights", str(unet), "--data", str(data_dir), "--out", str(tmp_path / "u.pt")]
    refused = CliRunner().invoke(detail_command, args)
    assert refused.exit_code != 0 and "not an appearance generator" in str(refused.exception)


def test_fitted_components_explain_real_faces_better_than_the_mean(fitted, data_dir):
    model = load_generator(fitted, backend="eager").module
    data = FaceShardDataset(data_dir, "train")
    image, landmarks = data.raw(0)
    texture = warp_points(
        torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1,
        control_points(torch.from_numpy(landmarks)[None], SIZE),
        control_points(model.mean_landmarks[None], SIZE),
    )[0]
    region = model.basis.float().abs().sum(dim=(0, 1)) > 0  # where the components live
    residual = (texture - model.mean_texture)[:, region].flatten()
    basis = model.basis.float()[:, :, region].flatten(1)  # (K, D), one standard deviation each
    coefficients = torch.linalg.lstsq(basis.t(), residual[:, None]).solution[:, 0]
    projected = residual - coefficients @ basis
    assert projected.square().mean() < 0.8 * residual.square().mean()
    # Components are orthogonal directions (PCA), scaled by decreasing standard deviations.
    norms = basis.norm(dim=1)
    gram = (basis / norms[:, None]) @ (basis / norms[:, None]).t()
    assert torch.allclose(gram, torch.eye(len(norms)), atol=2e-2)
    assert torch.all(norms[:-1] >= norms[1:] * 0.999)


def test_fitted_model_gives_each_track_its_own_face_on_real_crops(fitted, data_dir):
    runtime = load_generator(fitted, backend="eager")
    data = FaceShardDataset(data_dir, "val")
    image, landmarks = data.raw(0)
    mask = face_mask(landmarks, SIZE)
    faces = [AlignedFace(t, image, np.eye(2, 3), landmarks, mask) for t in (1, 1, 2)]
    out = runtime(faces)
    inside = mask > 0
    # Same track, same input: the same face (batch position may round one level differently).
    assert np.abs(out[0].astype(int) - out[1]).max() <= 1
    assert np.abs(out[0][inside].astype(int) - out[2][inside].astype(int)).mean() > 2
    assert np.array_equal(out[0][~inside], image[~inside])
    # A face, not noise: no more pixel-to-pixel change than in the real face (the fitted grain
    # matches real faces' fine detail on average, not more).
    def roughness(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image.astype(int), axis=1))[inside[:, 1:]].mean())

    assert roughness(out[0]) < 1.2 * roughness(image)


# ------------------------------------------------------------------ identity guard


@pytest.fixture(scope="module")
def guard_parts(fitted, data_dir):
    runtime = load_generator(fitted, backend="eager")
    image, landmarks = FaceShardDataset(data_dir, "val").raw(0)
    face = AlignedFace(5, image, np.eye(2, 3), landmarks, face_mask(landmarks, SIZE))
    return runtime, face, postprocessings(reference, PhotometricConfig())


def test_guard_keeps_the_farthest_candidate_and_refuses_when_none_is_far_enough(guard_parts):
    runtime, face, ways = guard_parts
    assert list(ways) == ["full", "strict"]
    guard = IdentityGuard(runtime, ways, candidates=3, threshold=1.99)  # nothing is that far
    choice = guard.choose(face, seed=0)
    # every candidate, with both post-processings, then bolder with both
    assert not choice.safe and choice.tried == 12
    # The reported distance is that of the chosen candidate, re-rendered here, and the largest.
    reference_embedding = guard.embedder.embed(face.image, face.landmarks)
    distances = {}
    for scale in (1.0, BOLD_SCALE):
        for name, show in ways.items():
            for attempt in range(3):
                code = np.stack([guard_latent(runtime, face, attempt)]) * scale
                image = show(runtime([face], latents=code), face.image[None], face.mask[None])[0]
                embedding = guard.embedder.embed(image, face.landmarks)
                distances[name, attempt, scale] = float(np.linalg.norm(embedding - reference_embedding))
    assert choice.distance == pytest.approx(max(distances.values()), abs=1e-5)
    assert distances[choice.postprocess, choice.attempt, choice.scale] == pytest.approx(choice.distance, abs=1e-5)
    np.testing.assert_allclose(choice.latent, guard_latent(runtime, face, choice.attempt) * choice.scale, rtol=1e-6)


def test_guard_stops_at_the_first_safe_batch(guard_parts):
    runtime, face, ways = guard_parts
    choice = IdentityGuard(runtime, ways, candidates=16, threshold=0.01).choose(face, seed=0)
    assert choice.safe and choice.postprocess == "full" and choice.tried == BATCH  # one batch
    assert choice.distance >= 0.06
    with pytest.raises(ValueError):
        IdentityGuard(runtime, ways, candidates=0)


def test_guard_shows_the_most_plausible_of_the_safe_candidates(guard_parts):
    """With a plausibility score, the choice among safe candidates is the best-scored one, not
    the farthest; the score sees exactly the crops the distances were measured on."""
    runtime, face, ways = guard_parts
    seen = []

    def brightness(crops: np.ndarray) -> np.ndarray:
        seen.append(crops.copy())
        return crops[:, face.mask > 0].mean(axis=(1, 2))

    guard = IdentityGuard(runtime, ways, candidates=BATCH, threshold=0.01, plausibility=brightness)
    choice = guard.choose(face, seed=0)
    assert choice.safe and choice.tried == BATCH and len(seen) == 1
    scores = brightness(seen[0])
    assert choice.attempt == int(np.argmax(scores))
    expected = ways["full"](runtime([face], latents=choice.latent[None]), face.image[None], face.mask[None])[0]
    assert np.array_equal(seen[0][choice.attempt], expected)
    farthest = IdentityGuard(runtime, ways, candidates=BATCH, threshold=0.01).choose(face, seed=0)
    # The planted data make the brightest candidate another than the farthest (fixed seeds): the
    # score, not the distance, decided.
    assert farthest.attempt != choice.attempt and farthest.distance > choice.distance
    assert scores[farthest.attempt] < scores[choice.attempt]


@pytest.mark.parametrize(
    ("accepted", "now", "kept"),
    [(0.75, 0.66, True), (0.75, 0.64, False), (0.62, 0.61, True), (0.62, 0.59, False), (0.64, 0.605, False)],
)
def test_a_recheck_holds_an_identity_to_the_bar_it_was_accepted_at(guard_parts, monkeypatch, accepted, now, kept):
    runtime, face, ways = guard_parts
    guard = IdentityGuard(runtime, ways, candidates=2, threshold=0.6)
    choice = IdentityChoice(guard_latent(runtime, face, 0), 0, accepted, 2, True, "full")
    monkeypatch.setattr(guard, "recheck_distance", lambda *args: now)
    assert guard.still_unlike(face, choice) is kept


def test_a_failed_identity_is_followed_by_a_successor_near_it(guard_parts):
    """After a failed re-check the guard tries the old latent turned 30 degrees towards fresh
    directions first: the new face is shown the same way, and it looks more like the old face
    than a fresh choice does."""
    from streamanon.generate.guard import SUCCESSOR_ANGLES

    runtime, face, ways = guard_parts
    guard = IdentityGuard(runtime, ways, candidates=BATCH, threshold=0.01)  # any candidate is far enough
    old = guard.choose(face, seed=0)
    bold = IdentityChoice(old.latent * BOLD_SCALE, old.attempt, 0.7, BATCH, True, "strict", BOLD_SCALE)
    successor = guard.choose(face, seed=0, previous=bold)
    assert successor.safe and successor.tried == BATCH and successor.attempt >= BATCH
    assert (successor.postprocess, successor.scale) == ("strict", BOLD_SCALE)
    angle = SUCCESSOR_ANGLES[0]
    direction = guard_latent(runtime, face, successor.attempt)
    np.testing.assert_allclose(successor.latent, (np.cos(angle) * old.latent + np.sin(angle) * direction) * BOLD_SCALE,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    fresh = guard.choose(face, seed=0, previous=replace(old, safe=False))  # an unsafe previous one is ignored
    assert fresh.attempt == old.attempt and np.array_equal(fresh.latent, old.latent)

    def shown(choice: IdentityChoice) -> np.ndarray:
        return ways["full"](runtime([face], latents=choice.latent[None] / choice.scale), face.image[None],
                            face.mask[None])[0].astype(int)  # fmt: skip

    plain = replace(old, latent=old.latent, scale=1.0, postprocess="full")
    near = guard.choose(face, seed=0, previous=plain)
    others = [guard_latent(runtime, face, attempt) for attempt in range(BATCH) if attempt != old.attempt]
    inside = face.mask > 0
    near_change = np.abs(shown(near) - shown(old))[inside].mean()
    fresh_changes = [np.abs(shown(replace(old, latent=code)) - shown(old))[inside].mean() for code in others]
    assert near_change < min(fresh_changes)


def test_no_successor_past_the_margin_gives_a_fresh_identity(guard_parts):
    runtime, face, ways = guard_parts
    old = IdentityChoice(guard_latent(runtime, face, 0), 0, 0.7, 2, True, "full")
    guard = IdentityGuard(runtime, ways, candidates=2, threshold=1.99)  # nothing is that far
    choice = guard.choose(face, seed=0, previous=old)
    # two successor rounds of 2, then every ordinary candidate as for a new track (2 post-processings x 2 scales)
    assert not choice.safe and choice.tried == 2 * 2 + 2 * 2 * 2 and choice.attempt < 2


def test_identity_swap_benchmark_measures_how_far_two_identities_look(guard_parts):
    """benchmarks/identity_swaps.py's measure: nothing between an identity and itself, a clear
    change between two of a track's candidates (and more than to its successor)."""
    import importlib.util
    from pathlib import Path

    from streamanon.generate.guard import crop_view

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "identity_swaps.py"
    spec = importlib.util.spec_from_file_location("identity_swaps", script)
    swaps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(swaps)
    runtime, face, ways = guard_parts
    guard = IdentityGuard(runtime, ways, candidates=BATCH, threshold=0.01)
    old = guard.choose(face, seed=0)
    other = IdentityChoice(guard_latent(runtime, face, old.attempt + 1), old.attempt + 1, 0.7, 1, True, "full")
    successor = guard.choose(face, seed=0, previous=old)
    view = crop_view(face)
    assert swaps.measure_swap(guard, face, view, old, old) == {"dlib_distance": 0.0, "pixel_change": 0.0}
    far = swaps.measure_swap(guard, face, view, old, other)
    near = swaps.measure_swap(guard, face, view, old, successor)
    assert far["dlib_distance"] > 0.05 and far["pixel_change"] > 2
    assert 0 < near["pixel_change"] < far["pixel_change"]


def guard_latent(runtime, face: AlignedFace, attempt: int) -> np.ndarray:
    from streamanon.generate.condition import track_latent

    return track_latent(face.track_id, 0, runtime.config.latent_dim, attempt=attempt)


def test_track_latent_attempts_are_distinct_and_attempt_zero_is_the_plain_track_code():
    from streamanon.generate.condition import track_latent

    base = track_latent(4, 0, 16)
    assert np.array_equal(track_latent(4, 0, 16, attempt=0), base)
    others = [track_latent(4, 0, 16, attempt=a) for a in (1, 2)]
    assert not np.allclose(others[0], base) and not np.allclose(others[0], others[1])
    assert np.array_equal(track_latent(4, 0, 16, attempt=2), others[1])


# ------------------------------------------------------------------ validation command


def test_validate_writes_figures_and_a_sample_grid_and_card_reads_them(fitted, data_dir, tmp_path):
    # Written where 'train card' looks for them: beside the weights.
    json_path, grid_path = fitted.with_suffix(".validation.json"), fitted.with_name(fitted.stem + "_samples.png")
    args = ["--weights", str(fitted), "--data", str(data_dir), "--count", "1", "--guard-candidates", "2"]
    result = CliRunner().invoke(validate_command, args + ["--json", str(json_path), "--grid", str(grid_path), "-q"],
                                catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "re-identified" in result.output and "guard:" in result.output
    figures = json.loads(json_path.read_text())
    assert figures["faces"] == 1 and figures["first_face"] == 0 and figures["guard"]["candidates"] == 2
    assert figures["guard"]["plausibility"] == "centerface" and figures["guard"]["landmarks"] == "both"
    assert figures["guard"]["seconds_per_choice"] > 0.0
    for row in ("original", "raw", "unguarded", "output"):
        assert 0.0 <= figures[row]["reid_rate"] <= 1.0 and 0.0 <= figures[row]["detection_rate"] <= 1.0
        assert 0.0 <= figures[row]["reid_rate_hog"] <= 1.0
        assert figures[row]["landmark_nme_mean"] >= 0.0
    assert figures["original"]["embedding_distance_mean"] < 0.2  # the original against itself
    assert figures["raw"]["embedding_distance_mean"] > figures["original"]["embedding_distance_mean"]
    from streamanon.io.images import read_image

    grid = read_image(grid_path)
    assert grid.shape[0] == 5 * (SIZE + 2) + 2  # five rows: masked / raw / post / output / original

    clip = tmp_path / "clip_eval.json"  # the parts of a 'streamanon eval --json' document the card reads
    row = {"original": "/x/talk.mp4", "temporal": {"identity_stability": {"mean": 0.95}},
           "metrics": {"reid": {"mean": 0.1}, "pose_nme": {"mean": 0.05}}}  # fmt: skip
    older = tmp_path / "older_eval.json"  # from before eval counted identity switches
    older.write_text(json.dumps({"rows": [dict(row, original="/x/old.mp4")]}))
    row["temporal"]["identity_switch_frames"] = [12, 40]
    clip.write_text(json.dumps({"rows": [row]}))
    untuned = dict(figures, first_face=3)  # figures on other faces, in their own file beside the weights
    fitted.with_suffix(".validation-untuned.json").write_text(json.dumps(untuned))
    card = CliRunner().invoke(card_command, [str(fitted), "--clip-eval", str(clip), "--clip-eval", str(older)],
                              catch_exceptions=False)  # fmt: skip
    assert card.exit_code == 0, card.output
    text = fitted.with_suffix(".md").read_text()
    assert "the one CenterFace finds most face-like" in text and "Faces 0-0 of the held-out set" in text
    assert "| shown, faces 3-3 (not used to tune the guard) |" in text
    shown = figures["output"]
    assert f"{100 * shown['reid_rate']:.1f} %" in text and f"{shown['landmark_nme_mean']:.4f}" in text
    assert "re-identified, stock dlib landmarks" in text and "the smaller distance counts" in text
    worse = max(shown["reid_rate"], shown["reid_rate_hog"])
    assert f"re-identification {100 * worse:.1f} % (the larger of the two estimates" in text
    assert "misses" in text or "meets" in text
    assert "non-commercial research use only" in text and grid_path.name in text
    assert "- Detail (`streamanon train detail`" in text and "(fits the detail too)" in text
    assert "they are smooth (no skin texture)" not in text
    assert "--components 6" in text  # how to reproduce, from the fit's own options
    assert "| `talk.mp4` | 0.950 (meets >= 0.9) | 2 | 10.0 % | 0.0500 |" in text
    assert "| `old.mp4` | 0.950 (meets >= 0.9) | – | 10.0 % | 0.0500 |" in text


def test_validate_starts_where_asked_and_refuses_a_start_past_the_data(fitted, data_dir, tmp_path):
    args = ["--weights", str(fitted), "--data", str(data_dir), "--count", "5", "--guard-farthest", "-q"]
    figures_path = tmp_path / "v.json"
    last = len(FaceShardDataset(data_dir, "val")) - 1
    own = ["--guard-candidates", "1", "--guard-landmarks", "own"]
    result = CliRunner().invoke(validate_command, args + ["--start", str(last), *own, "--json", str(figures_path)])
    assert result.exit_code == 0, result.output
    figures = json.loads(figures_path.read_text())
    validation_faces = figures["validation_faces"]
    assert figures["first_face"] == last and figures["faces"] == 1  # count clipped to the faces left
    assert figures["guard"]["plausibility"] is None and figures["guard"]["landmarks"] == "own"
    beyond = CliRunner().invoke(validate_command, args + ["--start", str(validation_faces)])
    assert beyond.exit_code != 0 and "start must be in" in str(beyond.exception or beyond.output)


def test_card_needs_the_validation_figures(tmp_path):
    weights = tmp_path / "g.pt"
    weights.write_bytes(b"")
    result = CliRunner().invoke(card_command, [str(weights)])
    assert result.exit_code != 0 and "not found" in str(result.exception)
