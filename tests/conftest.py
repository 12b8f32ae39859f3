"""Shared fixtures: where the read-only shared data lives, and skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STREAMANON_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def shared_path(relative: str) -> Path:
    """Path of a file under ../shared/data; skips the calling test when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture(autouse=True, scope="session")
def _model_cache_in_a_temporary_folder(tmp_path_factory):
    """Parsed model caches (the PyTorch landmark predictor's ~70 MB) go to a folder of this test
    session, not the user's ~/.cache, unless STREAMANON_CACHE says where."""
    if "STREAMANON_CACHE" in os.environ:
        yield
        return
    os.environ["STREAMANON_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    os.environ.pop("STREAMANON_CACHE", None)


def prepare_faces(tmp_path_factory, size: int, count: int = 24) -> Path:
    """A tiny prepared face data set from ``count`` real UTKFace crops (``train prepare`` end to end)."""
    from click.testing import CliRunner

    from streamanon.train.cli import prepare_command

    source = shared_path("faces/utkface")
    out = tmp_path_factory.mktemp("faces") / f"data{size}"
    result = CliRunner().invoke(
        prepare_command,
        [str(source), "--out", str(out), "--size", str(size), "--limit", str(count), "--workers", "1", "-q"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "prepared" in result.output
    return out
