"""Trainer: prepare real face crops, train a few steps at smoke size, checkpoints, resume (CPU)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from conftest import prepare_faces  # noqa: E402

from streamanon.errors import UserError  # noqa: E402
from streamanon.generate.model import Generator, GeneratorConfig  # noqa: E402
from streamanon.generate.runtime import load_generator  # noqa: E402
from streamanon.train import losses  # noqa: E402
from streamanon.train.checkpoint import (  # noqa: E402
    export_weights,
    generator_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
    state_dict_hash,
)
from streamanon.train.cli import prepare_command, run_command  # noqa: E402
from streamanon.train.dataset import FLIP_68, FaceShardDataset, StepBatchSampler, face_mask, flip_landmarks  # noqa: E402
from streamanon.train.report import read_losses  # noqa: E402
from streamanon.types import AlignedFace  # noqa: E402

SIZE = 64  # training runs at 64 px to stay fast on two shared cores; the size budget is checked at 128
N_FACES = 24
# Smoke-size networks: the real ones are exercised for shape/params in test_generate.py.
SMOKE = {
    "generator": {"base_channels": 8, "max_channels": 32, "latent_dim": 16, "w_dim": 32},
    "d_channels": 8,
    "d_max_channels": 32,
    "landmark_channels": 16,
    "landmark_warmup": 1,
    "div_samples": 2,
    "r1_every": 2,  # so that the R1 branch runs within the few smoke steps
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepare_faces(tmp_path_factory, SIZE, N_FACES)


@pytest.fixture(scope="module")
def data_128(tmp_path_factory):
    return prepare_faces(tmp_path_factory, 128, N_FACES)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """Two steps, then a resumed run up to three: the run directory."""
    run_dir = tmp_path_factory.mktemp("run")
    config = tmp_path_factory.mktemp("cfg") / "smoke.json"
    config.write_text(json.dumps(SMOKE))
    common = ["--data", str(data_dir), "--out", str(run_dir), "--batch", "4", "--workers", "0", "--config", str(config)]
    common += ["--sample-every", "2", "--checkpoint-every", "2", "--log-every", "1", "-q"]
    first = CliRunner().invoke(run_command, common + ["--steps", "2"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    payload = load_checkpoint(run_dir / "checkpoint.pt")
    assert payload["step"] == 2
    second = CliRunner().invoke(run_command, common + ["--steps", "3"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "steps 3..3" in second.output  # resumed at step 3, not from scratch
    return run_dir


# ------------------------------------------------------------------ prepare + data


def test_prepare_keeps_most_faces_and_stays_small(data_128):
    meta = json.loads((data_128 / "meta.json").read_text())
    counts = meta["counts"]
    kept = counts["train"] + counts["val"]
    assert kept + sum(meta["dropped"].values()) == N_FACES == meta["images"]
    assert kept >= 0.75 * N_FACES, meta["dropped"]  # UTKFace crops are clean frontal faces
    assert counts["val"] >= 1
    # Measured size projection for all 17.5k shared faces at 128 px must fit in 48 MiB.
    assert meta["resolution"] == 128
    assert meta["estimate"]["faces"] == 17_536
    assert meta["estimate"]["mib"] <= 48.0, meta["bytes_per_face"]
    # No machine paths in the data: names are source-relative.
    shard = np.load(data_128 / meta["shards"]["train"][0])
    names = bytes(shard["names"]).decode().split("\n")
    assert all(n.startswith("utkface/") for n in names)


def test_dataset_items_are_aligned_faces_with_landmark_masks(data_dir):
    data = FaceShardDataset(data_dir, "train")
    item = data[(0, False)]
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.uint8
    assert item["landmarks"].shape == (68, 2)
    assert item["mask"].shape == (1, SIZE, SIZE)
    lm = item["landmarks"].numpy()
    assert lm.min() >= 0 and lm.max() <= SIZE - 1
    mask = item["mask"][0].numpy()
    assert 0.05 < float((mask > 0).mean()) < 0.8
    # The mask covers the landmarks of the inner face (eyes, nose, mouth).
    inner = np.round(lm[36:68]).astype(int)
    assert (mask[inner[:, 1], inner[:, 0]] > 0).all()
    # The aligned face is roughly centred: the nose tip near the crop centre.
    assert abs(lm[30, 0] - SIZE / 2) < SIZE * 0.15


def test_flip_mirrors_image_and_keeps_landmark_labels(data_dir):
    data = FaceShardDataset(data_dir, "train")
    plain, flipped = data[(1, False)], data[(1, True)]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    lm, lm_f = plain["landmarks"].numpy(), flipped["landmarks"].numpy()
    # The subject's right eye (36..41) of the mirror image sits where the left eye (42..47) was.
    assert np.allclose(lm_f[36:42, 0].mean(), SIZE - 1 - lm[42:48, 0].mean(), atol=1e-3)
    assert lm_f[36:42, 0].mean() < lm_f[42:48, 0].mean()  # still image-left of the other eye
    assert sorted(FLIP_68.tolist()) == list(range(68))
    assert np.allclose(flip_landmarks(flip_landmarks(lm, SIZE), SIZE), lm)


def test_batches_are_a_pure_function_of_seed_and_step():
    a = StepBatchSampler(10, 4, seed=3, start_step=0, total_steps=6)
    b = StepBatchSampler(10, 4, seed=3, start_step=4, total_steps=6)
    batches = list(a)
    assert len(batches) == 6 and list(b) == batches[4:]
    epoch0 = [i for batch in batches[:2] for i, _ in batch]
    assert len(set(epoch0)) == 8  # no repeats within an epoch
    assert list(StepBatchSampler(10, 4, seed=4, start_step=0, total_steps=6)) != batches


# ------------------------------------------------------------------ losses


def test_losses_on_planted_values():
    zero = torch.zeros(5)
    assert losses.d_logistic_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert losses.g_nonsaturating_loss(torch.full((3,), 20.0)).item() < 1e-6
    # R1 of a linear critic D(x) = <w, x> is ||w||^2.
    w = torch.randn(1, 3, 4, 4)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert losses.r1_penalty((x * w).sum(dim=(1, 2, 3)), x).item() == pytest.approx(w.square().sum().item(), rel=1e-5)
    # Context loss: differences inside the mask are free, outside they count.
    real = torch.zeros(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    inside = real.clone()
    inside[..., 2:6, 2:6] = 1.0
    outside = real.clone()
    outside[..., 0, :] = 1.0
    assert losses.context_loss(inside, real, mask).item() == 0.0
    assert losses.context_loss(outside, real, mask).item() > 0.0
    # Diversity: identical outputs score 0, different ones negative, capped.
    z1, z2 = torch.zeros(1, 4), torch.ones(1, 4)
    assert losses.diversity_loss(inside, inside, z1, z2, mask).item() == 0.0
    assert losses.diversity_loss(inside, real, z1, z2, mask, cap=0.5).item() == pytest.approx(-0.5)
    lm = torch.zeros(1, 68, 2)
    assert losses.landmark_loss(lm + 12.8, lm, 128).item() == pytest.approx(0.1)


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(1)
    config = GeneratorConfig(resolution=32, base_channels=8, max_channels=16, latent_dim=8, w_dim=16)
    g = Generator(config)
    path = save_checkpoint(tmp_path / "ckpt.pt", config, g, step=42, train_state={"note": torch.arange(3)})
    payload = load_checkpoint(path)
    assert payload["step"] == 42 and GeneratorConfig.from_dict(payload["config"]) == config
    restored = generator_from_checkpoint(payload)
    original, loaded = g.state_dict(), restored.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    assert state_dict_hash(original) == state_dict_hash(loaded)
    weights = export_weights(path, tmp_path / "weights.pt")
    assert "train" not in load_checkpoint(weights) and "train" in payload
    assert weights.stat().st_size < path.stat().st_size
    changed = dict(original)
    first = next(iter(changed))
    changed[first] = changed[first].clone()
    changed[first].view(-1)[0] += 1e-3
    assert state_dict_hash(changed) != state_dict_hash(original)
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "absent.pt")


# ------------------------------------------------------------------ training


def test_training_logs_finite_losses_and_writes_artefacts(trained):
    rows = read_losses(trained / "losses.csv")
    assert [r["step"] for r in rows] == [1, 2, 3]  # resumed run appended step 3 only
    keys = {"d", "g_adv", "ctx", "lm_real", "div"}
    for row in rows:
        assert keys <= row.keys()
        assert all(math.isfinite(v) for v in row.values())
    assert any("r1" in r for r in rows) and any("lm_fake" in r for r in rows)
    assert (trained / "losses.png").stat().st_size > 0
    samples = sorted((trained / "samples").glob("step_*.png"))
    assert [p.name for p in samples] == ["step_0000002.png", "step_0000003.png"]
    assert load_checkpoint(trained / "checkpoint.pt")["step"] == 3


def test_resumed_training_matches_uninterrupted_training(data_dir, trained, tmp_path):
    """2 steps + resume to 3 gives the same weights as 3 steps in one go (CPU is deterministic)."""
    config = tmp_path / "smoke.json"
    config.write_text(json.dumps(SMOKE))
    args = ["--data", str(data_dir), "--out", str(tmp_path / "straight"), "--batch", "4", "--workers", "0"]
    args += ["--config", str(config), "--sample-every", "0", "--checkpoint-every", "100", "--steps", "3", "-q"]
    result = CliRunner().invoke(run_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    resumed = load_checkpoint(trained / "checkpoint.pt")
    assert straight["step"] == resumed["step"] == 3
    a, b = straight["generator_ema"], resumed["generator_ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(straight["train"]["discriminator"][k], v) for k, v in resumed["train"]["discriminator"].items())


def test_max_minutes_stops_early_with_a_checkpoint_to_resume_from(data_dir, tmp_path):
    """A run given almost no time stops after its first step, saves it, and a resume goes on."""
    config = tmp_path / "smoke.json"
    config.write_text(json.dumps(SMOKE))
    args = ["--data", str(data_dir), "--out", str(tmp_path / "run"), "--batch", "4", "--workers", "0"]
    args += ["--config", str(config), "--sample-every", "0", "--checkpoint-every", "100", "--steps", "50", "-q"]
    result = CliRunner().invoke(run_command, args + ["--max-minutes", "1e-6"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "steps 1..1" in result.output
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 1
    assert (tmp_path / "run" / f"generator_{SIZE}.pt").exists()
    again = CliRunner().invoke(run_command, args + ["--steps", "2"], catch_exceptions=False)
    assert "steps 2..2" in again.output and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2


def test_trained_weights_run_in_the_runtime_on_real_crops(data_dir, trained):
    runtime = load_generator(trained / f"generator_{SIZE}.pt", backend="eager")
    data = FaceShardDataset(data_dir, "val")
    image, landmarks = data.raw(0)
    face = AlignedFace(5, image, np.eye(2, 3), landmarks, face_mask(landmarks, SIZE))
    out = runtime([face])
    assert out.shape == (1, SIZE, SIZE, 3) and out.dtype == np.uint8
    outside = face.mask == 0
    assert np.array_equal(out[0][outside], image[outside])
    assert not np.array_equal(out[0][~outside], image[~outside])


def test_commands_reject_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images"):
        CliRunner().invoke(prepare_command, [str(empty), "--out", str(tmp_path / "o")], catch_exceptions=False)
    with pytest.raises(UserError, match="not a prepared"):
        CliRunner().invoke(run_command, ["--data", str(empty), "--out", str(tmp_path / "r")], catch_exceptions=False)
