"""benchmarks/gpu_carry.py: payloads cut into parts for several device calls, rebuilt and checked."""

from __future__ import annotations

import hashlib
import importlib.util
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_carry.py"


@pytest.fixture(scope="module")
def carry():
    spec = importlib.util.spec_from_file_location("gpu_carry", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _items(tmp_path: Path) -> tuple[list, dict[str, bytes]]:
    """A compressible 'model' (carried as xz) and an incompressible 'wheel', as staging makes them."""
    rng = np.random.default_rng(0)
    model = np.repeat(rng.integers(0, 255, 3000, dtype=np.uint8), 7).tobytes()
    wheel = rng.integers(0, 255, 5000, dtype=np.uint8).tobytes()
    packed = tmp_path / "predictor.dat.xz"
    packed.write_bytes(lzma.compress(model))
    (tmp_path / "pkg-1.0-cp312.whl").write_bytes(wheel)
    items = [
        (packed, "predictor.dat", "model", hashlib.sha256(model).hexdigest()),
        (tmp_path / "pkg-1.0-cp312.whl", "pkg-1.0-cp312.whl", "wheel", hashlib.sha256(wheel).hexdigest()),
    ]
    return items, {"predictor.dat": model, "pkg-1.0-cp312.whl": wheel}


def _receive_all(parts: list[Path], received: Path) -> None:
    received.mkdir()
    for part in parts:  # one device call each: each part lands beside the earlier ones
        for path in part.iterdir():
            shutil.copy2(path, received / path.name)


def test_parts_respect_the_budget_and_rebuild_bit_exactly(carry, tmp_path):
    items, originals = _items(tmp_path)
    budget = 2000
    parts = carry.pack(items, budget, tmp_path / "stage")
    total = sum(path.stat().st_size for path, *_ in items)
    assert len(parts) == -(-total // budget) >= 3
    for part in parts:
        assert sum(p.stat().st_size for p in part.iterdir() if p.name != carry.MANIFEST) <= budget
    _receive_all(parts, tmp_path / "received")
    built = carry.rebuild(tmp_path / "received", tmp_path / "models", tmp_path / "wheels")
    assert [p.parent.name for p in built] == ["models", "wheels"]
    for path in built:
        assert path.read_bytes() == originals[path.name]


def test_a_missing_or_damaged_chunk_is_reported(carry, tmp_path):
    items, _ = _items(tmp_path)
    parts = carry.pack(items, 2000, tmp_path / "stage")
    _receive_all(parts[:-1], tmp_path / "partial")
    with pytest.raises(ValueError, match="incomplete"):
        carry.rebuild(tmp_path / "partial", tmp_path / "models", tmp_path / "wheels")
    _receive_all(parts, tmp_path / "damaged")
    chunk = next(p for p in (tmp_path / "damaged").iterdir() if p.name.startswith("pkg-"))
    data = bytearray(chunk.read_bytes())
    data[0] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="pkg-1.0-cp312.whl: checksum mismatch"):
        carry.rebuild(tmp_path / "damaged", tmp_path / "models", tmp_path / "wheels")
    with pytest.raises(ValueError, match="nothing was received"):
        carry.rebuild(tmp_path / "empty", tmp_path / "models", tmp_path / "wheels")
