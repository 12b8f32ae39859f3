"""File I/O: video via PyAV (frames in, frames out, other streams copied), still images, path checks.

Everything that touches the user's files goes through here, so the "never overwrite
the input, never leave a partial output" rules live in one place (``paths``).
"""

from __future__ import annotations

from .images import IMAGE_EXTENSIONS, is_image_path, iter_image_folder, read_image, write_image
from .paths import VIDEO_EXTENSIONS, atomic_output, check_paths, is_video_path
from .video import (
    ProcessedFrame,
    TranscodeResult,
    VideoReader,
    VideoWriter,
    from_display,
    to_display,
    transcode,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ProcessedFrame",
    "TranscodeResult",
    "VideoReader",
    "VideoWriter",
    "atomic_output",
    "check_paths",
    "from_display",
    "is_image_path",
    "is_video_path",
    "iter_image_folder",
    "read_image",
    "to_display",
    "transcode",
    "write_image",
]
