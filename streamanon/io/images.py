"""Still images: read (EXIF orientation applied), write atomically, walk folders.

OpenCV does the decoding and encoding (it is already a dependency). Images are
returned and accepted as RGB ``uint8`` arrays of shape ``(H, W, 3)``; grey and 16-bit
inputs are converted to that, and an alpha channel is dropped.

A file holding several pictures (an animated WebP or PNG, a multi-page TIFF) is refused
with a one-line error saying what to do: decoding keeps only the first picture and writing
makes a single-picture file, so the others would be lost silently. (Animated GIF is read as
a video, not here.)
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Callable, Iterator

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
    _refuse_several_pictures(path, data.tobytes())
    # IMREAD_COLOR applies the EXIF orientation (IMREAD_IGNORE_ORIENTATION is not set).
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise UserError(f"cannot decode image {path}: not an image or corrupt")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _refuse_several_pictures(path: Path, data: bytes) -> None:
    """Raise :class:`UserError` when ``data`` holds more than one picture (by content, not extension)."""
    kind, count = picture_count(data)
    if count <= 1:
        return
    stem = path.stem or "image"
    if kind == "tiff":
        raise UserError(
            f"{path} is a TIFF of {count} pages, and an image is anonymized as one picture (the other pages "
            f"would be lost): split it into one file per page first (e.g. magick '{path.name}' '{stem}_%03d.tif') "
            "and anonymize those"
        )
    raise UserError(
        f"{path} is an animated {kind} of {count} frames, and an image is anonymized as one picture (the other "
        f"frames would be lost): convert it to a video first (e.g. an animated GIF: magick '{path.name}' "
        f"'{stem}.gif') and anonymize that, or split it into single images"
    )


def picture_count(data: bytes) -> tuple[str, int]:
    """``(format, pictures)`` of an encoded image: the frames of an animated WebP or PNG (APNG), the
    pages of a TIFF (reduced-resolution previews not counted); ``("", 1)`` for anything else.

    Only the container structure is read (no pixel is decoded), and a damaged structure counts as
    one picture: decoding then reports the damage.
    """
    try:
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return "WebP", _webp_frames(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return "PNG", _png_frames(data)
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return "tiff", _tiff_pages(data)
    except (struct.error, ValueError, IndexError):
        pass
    return "", 1


def _webp_frames(data: bytes) -> int:
    frames, offset = 0, 12
    while offset + 8 <= len(data):
        fourcc, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        frames += fourcc == b"ANMF"
        offset += 8 + size + (size & 1)  # chunks are padded to an even size
    return max(frames, 1)


def _png_frames(data: bytes) -> int:
    offset = 8
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if kind == b"acTL":  # APNG animation control: frame count first
            return max(struct.unpack_from(">I", data, offset + 8)[0], 1)
        if kind in (b"IDAT", b"IEND"):  # acTL must come before the image data
            break
        offset += 12 + size
    return 1


_NEW_SUBFILE_TYPE, _SUBFILE_TYPE = 254, 255


def _tiff_pages(data: bytes) -> int:
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    count_fmt, entry_size, offset_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    offset = struct.unpack_from(order + offset_fmt, data, 8 if big else 4)[0]
    pages, seen = 0, set()
    while offset and offset not in seen and len(seen) < 100_000:
        seen.add(offset)
        entries = struct.unpack_from(order + count_fmt, data, offset)[0]
        start = offset + struct.calcsize(count_fmt)
        reduced = False
        for index in range(min(entries, 10_000)):
            at = start + index * entry_size
            tag, kind = struct.unpack_from(order + "HH", data, at)
            if tag in (_NEW_SUBFILE_TYPE, _SUBFILE_TYPE):
                value_at = at + (12 if big else 8)
                value = struct.unpack_from(order + ("H" if kind == 3 else "I"), data, value_at)[0]
                # A reduced-resolution preview of a page (NewSubfileType bit 0; old SubfileType 2).
                reduced |= bool(value & 1) if tag == _NEW_SUBFILE_TYPE else value == 2
        pages += not reduced
        offset = struct.unpack_from(order + offset_fmt, data, start + entries * entry_size)[0]
    return max(pages, 1)


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
    try:
        with atomic_output(path) as tmp:
            encoded.tofile(tmp)
    except OSError as exc:  # e.g. the disk is full; the partial file is already removed
        raise UserError(f"cannot write image {path}: {exc.strerror or exc}") from None


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside names by value: ``frame_2`` before ``frame_10``
    (cameras and exporters often number frames without leading zeros)."""
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", name) if part)  # fmt: skip


def image_sequences(src_dir: str | os.PathLike) -> list[list[tuple[Path, Path]]]:
    """The images under ``src_dir`` as frame sequences: one per folder (its own images, not its
    subfolders'), each in natural name order (:func:`natural_key`); folders in sorted order, empty
    ones left out. Items are ``(relative_path, path)`` as :func:`iter_image_folder` yields them."""
    by_folder: dict[Path, list[tuple[Path, Path]]] = {}
    for relative, path in iter_image_folder(src_dir):
        by_folder.setdefault(relative.parent, []).append((relative, path))
    return [sorted(items, key=lambda item: natural_key(item[0].name))
            for _, items in sorted(by_folder.items(), key=lambda entry: entry[0].parts)]  # fmt: skip


def iter_image_folder(src_dir: str | os.PathLike) -> Iterator[tuple[Path, Path]]:
    """Yield ``(relative_path, path)`` for every image under ``src_dir`` (see :func:`iter_folder_files`)."""
    yield from iter_folder_files(src_dir, is_image_path)


def iter_folder_files(src_dir: str | os.PathLike, accept: Callable[[str], bool]) -> Iterator[tuple[Path, Path]]:
    """Yield ``(relative_path, path)`` for every file under ``src_dir`` whose name ``accept`` takes,
    sorted, recursive.

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
            if not name.startswith(".") and accept(name):
                found.append(Path(folder, name).relative_to(root))
    for relative in sorted(found, key=lambda p: p.parts):
        yield relative, root / relative
