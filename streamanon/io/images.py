"""Still images: read (EXIF orientation applied), write atomically, walk folders.

OpenCV does the decoding and encoding (it is already a dependency). Images are
returned and accepted as RGB ``uint8`` arrays of shape ``(H, W, 3)``; grey and 16-bit
inputs are converted to that, and an alpha channel is dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import UserError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

JPEG_QUALITY = 95
WEBP_QUALITY = 95


def is_image_path(path: str | os.PathLike) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB ``uint8`` ``(H, W, 3)``, upright per its EXIF orientation.

    Raises :class:`UserError` when the file is missing, unreadable or not an image.
    """
    path = Path(path)
    try:
        # np.fromfile + imdecode instead of imread: works with non-ASCII paths everywhere.
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read image {path}: {exc.strerror or exc}") from None
    # IMREAD_COLOR applies the EXIF orientation (IMREAD_IGNORE_ORIENTATION is not set).
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise UserError(f"cannot decode image {path}: not an image or corrupt")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _encode_params(suffix: str) -> list[int]:
    if suffix in (".jpg", ".jpeg"):
        return [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    if suffix == ".webp":
        return [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY]
    return []


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write RGB ``uint8`` ``(H, W, 3)`` to ``path`` in the format its extension names.

    JPEG and WebP use quality 95; PNG, BMP and TIFF are lossless. The file appears
    atomically (temporary file + rename), so a crash never leaves a truncated image.
    """
    from .paths import atomic_output  # paths imports this module for IMAGE_EXTENSIONS

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        known = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise UserError(f"unknown image extension '{path.suffix or path.name}' (use one of {known})")
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_image expects an RGB uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _encode_params(suffix))
    if not ok:
        raise UserError(f"cannot encode a {rgb.shape[1]}x{rgb.shape[0]} image as {suffix}")
    with atomic_output(path) as tmp:
        encoded.tofile(tmp)


def iter_image_folder(src_dir: str | os.PathLike) -> Iterator[tuple[Path, Path]]:
    """Yield ``(relative_path, path)`` for every image under ``src_dir``, sorted, recursive.

    ``relative_path`` is relative to ``src_dir`` so an output folder can mirror the
    input tree. Hidden files and folders (names starting with ``.``, which includes
    our own temporary ``.name.partial-*`` files) are skipped; symlinked folders are not
    followed, so a link loop cannot make the walk endless.
    """
    root = Path(src_dir)
    if not root.is_dir():
        raise UserError(f"not a folder: {root}")
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and is_image_path(name):
                found.append(Path(folder, name).relative_to(root))
    for relative in sorted(found, key=lambda p: p.parts):
        yield relative, root / relative
