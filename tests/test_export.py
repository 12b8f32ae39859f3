"""``streamanon export``: every missing prerequisite is one line and a non-zero exit; on a CUDA
machine with torch-tensorrt it writes engines keyed by model, GPU, versions, batch and size."""

from __future__ import annotations

import importlib
import sys

import pytest

from streamanon import models
from streamanon.cli import EXIT_USAGE, EXIT_USER_ERROR, main
from streamanon.generate.export_cli import parse_batch_sizes

TINY = dict(resolution=32, base_channels=8, max_channels=32, latent_dim=16, w_dim=32)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def assert_one_line_error(code: int, err: str, *expected: str, exit_code: int = EXIT_USER_ERROR) -> None:
    assert code == exit_code, (code, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text.lower() in err.lower(), (text, err)


def _cuda_and_tensorrt() -> bool:
    try:
        import torch

        importlib.import_module("torch_tensorrt")
    except Exception:  # noqa: BLE001 - missing or broken: not available
        return False
    return torch.cuda.is_available()


@pytest.fixture
def no_registry_weights(monkeypatch, tmp_path):
    """No generator weights anywhere the registry looks."""
    monkeypatch.setattr(models, "PACKAGE_WEIGHTS", tmp_path / "none")
    monkeypatch.setenv("STREAMANON_MODELS", str(tmp_path / "empty"))


@pytest.fixture
def tiny_weights(tmp_path):
    torch = pytest.importorskip("torch")
    from streamanon.generate.model import Generator, GeneratorConfig
    from streamanon.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = GeneratorConfig(**TINY)
    return save_checkpoint(tmp_path / "generator_tiny.pt", config, Generator(config), step=0)


def test_parse_batch_sizes():
    assert parse_batch_sizes(None, None, "4, 1,2,,2") == [1, 2, 4]
    assert parse_batch_sizes(None, None, "") is None
    assert parse_batch_sizes(None, None, None) is None


def test_export_is_registered(capsys):
    code, out, _ = run_cli(capsys, "export", "--help")
    assert code == 0
    for option in ("--weights", "--device", "--batch-sizes", "--dtype", "--max-batch", "--engine-dir"):
        assert option in out


def test_bad_command_lines_are_one_line(capsys, tmp_path):
    for args, expected, exit_code in [
        (("--batch-sizes", "1,x"), "'x' is not a whole number", EXIT_USAGE),
        (("--batch-sizes", "0"), ">= 1", EXIT_USAGE),
        (("--dtype", "fp8"), "fp8", EXIT_USAGE),
        (("--batch-sizes", "64", "--max-batch", "8"), "larger than --max-batch 8", EXIT_USER_ERROR),
        (("--device", "cpu"), "CUDA device", EXIT_USER_ERROR),
        (("--device", "cuda:x"), "cuda:x", EXIT_USER_ERROR),
    ]:
        code, _, err = run_cli(capsys, "export", "--engine-dir", tmp_path / "engines", *args)
        assert_one_line_error(code, err, expected, exit_code=exit_code)
    assert not (tmp_path / "engines").exists()


def test_without_trained_weights_the_model_unavailable_message(capsys, no_registry_weights, tmp_path):
    pytest.importorskip("torch")
    code, _, err = run_cli(capsys, "export", "--engine-dir", tmp_path / "engines")
    assert_one_line_error(code, err, "reinstall", "streamanon train appearance", "--weights")
    code, _, err = run_cli(capsys, "export", "--weights", tmp_path / "missing.pt")
    assert_one_line_error(code, err, "not found", "missing.pt")
    assert not (tmp_path / "engines").exists()


def test_without_pytorch_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    code, _, err = run_cli(capsys, "export", "--engine-dir", tmp_path / "engines")
    assert_one_line_error(code, err, "needs PyTorch", "streamanon[generate]")


def test_without_cuda_or_tensorrt_names_what_is_missing(capsys, tiny_weights, tmp_path):
    if _cuda_and_tensorrt():
        pytest.skip("this machine has CUDA and torch-tensorrt; the round trip below covers it")
    import torch

    from streamanon.generate.runtime import tensorrt_available

    engines = tmp_path / "engines"
    code, _, err = run_cli(capsys, "export", "--weights", tiny_weights, "--engine-dir", engines)
    expected = ["streamanon export needs"]
    if not torch.cuda.is_available():
        expected.append("CUDA")
    if not tensorrt_available():
        expected.append("pip install 'streamanon[tensorrt]'")
    assert_one_line_error(code, err, *expected)
    assert not engines.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_and_tensorrt(), reason="needs a CUDA GPU and torch-tensorrt")
def test_export_round_trip(capsys, tiny_weights, tmp_path):
    import re

    import numpy as np
    import tensorrt
    import torch

    from streamanon.generate.runtime import load_generator
    from streamanon.types import AlignedFace

    engines = tmp_path / "engines"
    args = ("export", "--weights", tiny_weights, "--batch-sizes", "1,3", "--max-batch", "4", "--engine-dir", engines)
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    files = [engines / line.rsplit("/", 1)[-1] for line in out.splitlines()]
    assert len(files) == 2 and all(f.is_file() for f in files)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-")
    for f, batch in zip(files, (1, 4)):  # 3 faces run padded to the batch-4 engine
        assert f"-b{batch}-" in f.name and "-r32-" in f.name and "-fp16-" in f.name
        assert gpu in f.name and f"trt{tensorrt.__version__}" in f.name
    stamps = [f.stat().st_mtime_ns for f in files]

    # A second export finds the engines cached; the runtime loads them instead of rebuilding.
    assert run_cli(capsys, *args)[0] == 0
    assert [f.stat().st_mtime_ns for f in files] == stamps
    # Without warmup (which would build the missing batch-2 engine too), only what runs is loaded.
    runtime = load_generator(tiny_weights, device="cuda", backend="tensorrt", max_batch=4, engine_dir=engines,
                             warmup=False)  # fmt: skip
    rng = np.random.default_rng(0)
    size = TINY["resolution"]
    mask = np.zeros((size, size), np.float32)
    mask[8:24, 8:24] = 1.0
    landmarks = np.tile(np.array([[size / 2, size / 2]], np.float32), (68, 1))
    faces = [
        AlignedFace(t, rng.integers(0, 256, (size, size, 3), dtype=np.uint8), np.eye(2, 3), landmarks, mask)
        for t in (1, 2, 3)
    ]
    eager = load_generator(tiny_weights, device="cuda", backend="eager")(faces)
    assert np.abs(runtime(faces).astype(int) - eager.astype(int)).max() <= 3
    assert sorted(engines.iterdir()) == sorted(files)
