"""Input/output path checks and atomic output files.

Two rules from DESIGN.md live here: the input is never overwritten (nor opened for
writing), and nothing partial is ever left at the output path. ``check_paths`` turns
every foreseeable path problem into a one-line :class:`~streamanon.errors.UserError`
before any decoding starts; ``atomic_output`` gives writers a hidden temporary file
next to the destination and renames it into place only on success.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from .images import IMAGE_EXTENSIONS, is_image_path, iter_folder_files

# Containers the video sink can write, by extension (FFmpeg picks the muxer from it).
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts",
        ".mpg", ".mpeg", ".flv", ".3gp", ".ogv", ".nut", ".mxf", ".wmv", ".asf",
    }
)  # fmt: skip


def is_video_path(path: str | os.PathLike) -> bool:
    """True when ``path`` has a video container extension (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def other_files(src_dir: str | os.PathLike) -> list[Path]:
    """The files under ``src_dir`` (relative) that are neither images nor videos by extension and
    that a folder run therefore leaves out; hidden ones are not counted."""
    other = iter_folder_files(src_dir, lambda name: not (is_image_path(name) or is_video_path(name)))
    return [relative for relative, _ in other]


def iter_video_folder(src_dir: str | os.PathLike) -> Iterator[tuple[Path, Path]]:
    """Yield ``(relative_path, path)`` for every video under ``src_dir``, sorted, recursive (hidden
    files and folders left out, as :func:`~streamanon.io.images.iter_folder_files` walks)."""
    yield from iter_folder_files(src_dir, is_video_path)


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (same resolved path, or hard links and other aliases)."""
    if a.resolve() == b.resolve():
        return True
    if not b.exists():
        return False
    try:
        # Catches hard links and other aliases that resolve() cannot see.
        return os.path.samefile(a, b)
    except OSError:
        return False


def _extensions(names: frozenset[str]) -> str:
    return ", ".join(sorted(names))


def check_paths(src: Path, dst: Path, overwrite: bool, skip_existing: bool = False) -> None:
    """Raise :class:`UserError` (one line) if ``src`` cannot be turned into ``dst``.

    ``src`` is a video file, an image file or a folder of them; ``dst`` is the
    matching kind (a folder for a folder input). Checks, in order: the input exists
    and is readable; the output is not the input; an existing output is only
    replaced with ``overwrite`` (the message names ``--overwrite``); the output's
    folder exists and is writable; image and video extensions are not mixed.
    ``skip_existing``: the caller leaves existing outputs alone, so an output folder
    that is not empty is fine (an existing output file still needs ``overwrite``).
    Nothing is created or opened for writing.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise UserError(f"input not found: {src}")
    if src.is_dir():
        if not os.access(src, os.R_OK | os.X_OK):
            raise UserError(f"input folder is not readable: {src}")
    elif not src.is_file():
        raise UserError(f"input is not a regular file or folder: {src}")
    elif not os.access(src, os.R_OK):
        raise UserError(f"input file is not readable (permission denied): {src}")

    if same_file(src, dst):
        raise UserError(f"output must differ from the input: {dst}")

    if src.is_dir():
        _check_folder_output(src, dst, overwrite or skip_existing)
        return

    if dst.is_dir():
        raise UserError(f"output is a folder, give an output file name: {dst}")
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise UserError(f"output exists: {dst} (use --overwrite to replace it)")
    check_parent_writable(dst)

    if is_image_path(src):
        if not is_image_path(dst):
            raise UserError(
                f"input {src.name} is an image, so the output needs an image extension "
                f"({_extensions(IMAGE_EXTENSIONS)}), not '{dst.suffix or dst.name}'"
            )
    elif not is_video_path(dst):
        if is_image_path(dst):
            raise UserError(
                f"input {src.name} is a video, so the output needs a video extension "
                f"such as .mp4 or .mkv, not '{dst.suffix}'"
            )
        if dst.suffix.lower() == ".gif":
            raise UserError("GIF output is not supported (256 colours a frame); write a video, e.g. .mp4 or .webm")
        raise UserError(
            f"unknown output extension '{dst.suffix or dst.name}' (use one of {_extensions(VIDEO_EXTENSIONS)})"
        )


def _check_folder_output(src: Path, dst: Path, may_be_full: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise UserError(f"input {src} is a folder, so the output must be a folder too, not a file: {dst}")
    src_real, dst_real = src.resolve(), dst.resolve()
    if src_real in dst_real.parents:
        # Outputs inside the input tree would be picked up as inputs on the next run.
        raise UserError(f"output folder must not be inside the input folder: {dst}")
    if dst_real in src_real.parents:
        # Outputs would land on input files not read yet (src/x.jpg is dst/<src name>/x.jpg's
        # output when src's own tree holds that path), and mix with the inputs.
        raise UserError(f"output folder must not hold the input folder: {dst} holds {src}")
    if dst.is_dir():
        if any(dst.iterdir()) and not may_be_full:
            raise UserError(
                f"output folder is not empty: {dst} (use --overwrite to replace files in it, "
                "or --skip-existing to leave them and do the rest)"
            )
        if not os.access(dst, os.W_OK | os.X_OK):
            raise UserError(f"output folder is not writable: {dst}")
        return
    check_parent_writable(dst)


def check_parent_writable(dst: Path) -> None:
    """One-line :class:`UserError` unless ``dst``'s folder exists and can be written to."""
    parent = dst.absolute().parent
    if not parent.is_dir():
        raise UserError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"output folder is not writable: {parent}")


def _default_file_mode() -> int:
    """0o666 minus the process umask: the mode a plain ``open(..., 'w')`` would give."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(dst: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dst``; move it onto ``dst`` only on success.

    The temporary file is hidden and keeps ``dst``'s extension so a muxer or image
    encoder picks the right format (``.out.mp4.partial-k3j9.mp4``). It lives in the
    same folder, so the final :func:`os.replace` is atomic and readers of ``dst`` see
    either the old file or the complete new one. On any exception, including
    ``KeyboardInterrupt``, the temporary file is deleted and the exception re-raised.
    The result gets the mode of the file it replaces, or the umask default.
    """
    dst = Path(dst)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.partial-", suffix=dst.suffix, dir=dst.absolute().parent)
    except OSError as exc:
        raise UserError(f"cannot create a file next to {dst}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        try:
            mode = dst.stat().st_mode & 0o7777
        except OSError:
            mode = _default_file_mode()
        # mkstemp creates the file 0600; give it the mode a normal save would have.
        os.chmod(tmp, mode)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
