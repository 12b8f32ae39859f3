"""Raw video frames on pipes: sizes and conversions of rgb24, bgr24 and yuv420p.

yuv420p is I420 (full-size Y plane, then quarter-size U and V) with BT.601 limited-range
coefficients, which is what ``ffmpeg -f rawvideo -pix_fmt yuv420p`` reads and writes
when the stream carries no colour tags.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import UserError

RAW_PIX_FMTS: tuple[str, ...] = ("rgb24", "bgr24", "yuv420p")


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``; raises :class:`UserError` on anything else."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"size must look like WIDTHxHEIGHT, e.g. 640x480, not '{text}'") from None
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise UserError(f"size {width}x{height} is out of range (1 to 16384 pixels per side)")
    return width, height


def check_raw_format(pix_fmt: str, width: int, height: int) -> None:
    """Raise :class:`UserError` unless raw frames of this format and size can be converted."""
    if pix_fmt not in RAW_PIX_FMTS:
        raise UserError(f"raw frames must be one of {', '.join(RAW_PIX_FMTS)}, not '{pix_fmt}'")
    if pix_fmt == "yuv420p" and (width % 2 or height % 2):
        raise UserError(f"yuv420p raw frames need an even size, got {width}x{height}; use rgb24")


def frame_bytes(pix_fmt: str, width: int, height: int) -> int:
    """Bytes of one raw frame."""
    if pix_fmt == "yuv420p":
        return width * height * 3 // 2
    return width * height * 3


def raw_to_rgb(data: bytes | bytearray | memoryview, pix_fmt: str, width: int, height: int) -> np.ndarray:
    """One raw frame's bytes -> (H, W, 3) uint8 RGB (a new array)."""
    flat = np.frombuffer(data, np.uint8, count=frame_bytes(pix_fmt, width, height))
    if pix_fmt == "rgb24":
        return flat.reshape(height, width, 3).copy()
    if pix_fmt == "bgr24":
        return np.ascontiguousarray(flat.reshape(height, width, 3)[:, :, ::-1])
    return cv2.cvtColor(flat.reshape(height * 3 // 2, width), cv2.COLOR_YUV2RGB_I420)


def rgb_to_raw(image: np.ndarray, pix_fmt: str) -> bytes:
    """(H, W, 3) uint8 RGB -> one raw frame's bytes."""
    if pix_fmt == "rgb24":
        return np.ascontiguousarray(image).tobytes()
    if pix_fmt == "bgr24":
        return np.ascontiguousarray(image[:, :, ::-1]).tobytes()
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420).tobytes()
