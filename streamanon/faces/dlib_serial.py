"""dlib's binary serialization (dlib/serialize.h, dlib/float_details.h, dlib/dnn/tensor.h).

dlib writes every integer as a control byte (low nibble: the number of magnitude bytes that
follow, little-endian; 0x80: negative; 0x70: reserved, always 0) and every float or double
as two such integers, an int64 mantissa and an int16 exponent (value = mantissa * 2**exponent;
exponents 32000..32002 stand for +inf, -inf and NaN). So a file is one stream of variable-length
tokens, and where a token starts depends on every token before it.

:class:`DlibReader` walks that stream one value at a time. :func:`float_blocks` decodes the
millions of floats of a large model at NumPy speed (see there).
"""

from __future__ import annotations

import math

import numpy as np

_SPECIAL_EXPONENTS = {32000: np.inf, 32001: -np.inf, 32002: np.nan}
# _LOW_BYTES[n]: the mask keeping the low n bytes of a uint64.
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(9)], np.uint64)


class DlibFormatError(Exception):
    """The bytes are not what the object being read should contain (callers turn it into a UserError)."""


class DlibReader:
    """Cursor over the file's bytes, with dlib's encodings of the primitive types."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DlibFormatError(f"file ends early at byte {len(self.data)} (needs {end})")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def _int(self, max_bytes: int, signed: bool) -> int:
        # dlib packs integers as a control byte (low nibble: byte count, 0x80: negative,
        # 0x70 reserved and always 0) then that many little-endian magnitude bytes.
        control = self.take(1)[0]
        size = control & 0x0F
        if control & 0x70 or size > max_bytes or (control & 0x80 and not signed):
            raise DlibFormatError(f"bad integer control byte 0x{control:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def int32(self) -> int:
        return self._int(4, signed=True)

    def int64(self) -> int:
        return self._int(8, signed=True)

    def uint64(self) -> int:
        return self._int(8, signed=False)

    def boolean(self) -> bool:
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def real(self) -> float:
        # dlib's float_details: int64 mantissa and int16 exponent, value = m * 2**e;
        # exponents 32000..32002 encode +inf, -inf and NaN.
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise DlibFormatError(f"old ASCII float encoding at byte {self.pos} (not supported)")
        mantissa = self.int64()
        exponent = self._int(2, signed=True)
        if exponent in _SPECIAL_EXPONENTS:
            return float(_SPECIAL_EXPONENTS[exponent])
        return math.ldexp(float(mantissa), exponent)

    def string(self, max_len: int = 256) -> str:
        n = self.uint64()
        if n > max_len:
            raise DlibFormatError(f"implausible string length {n} at byte {self.pos}")
        try:
            return self.take(n).decode("ascii")
        except UnicodeDecodeError:
            raise DlibFormatError(f"non-ASCII layer name at byte {self.pos - n}") from None

    def version(self, accepted: tuple[int, ...], what: str) -> int:
        v = self.int32()
        if v not in accepted:
            raise DlibFormatError(f"{what} version {v} (expected {'/'.join(map(str, accepted))})")
        return v

    def _shape(self) -> tuple[int, int, int, int]:
        shape = tuple(self.int64() for _ in range(4))
        if min(shape) < 0:
            raise DlibFormatError(f"negative tensor shape {shape} at byte {self.pos}")
        return shape  # type: ignore[return-value]

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor`` as a float32 (n, k, nr, nc) array."""
        version = self.version((1, 2), "tensor")
        shape = self._shape()
        count = math.prod(shape)
        if count > len(self.data) - self.pos:  # even v1 floats take >= 1 byte each
            raise DlibFormatError(f"tensor of shape {shape} at byte {self.pos} is larger than the rest of the file")
        if version == 2:  # raw little-endian IEEE float32
            values = np.frombuffer(self.take(4 * count), dtype="<f4")
        else:  # version 1: each value as a dlib float (only tiny or empty tensors in practice)
            values = np.array([self.real() for _ in range(count)], np.float32)
        return values.astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: only a shape (a view into a layer's params)."""
        self.version((1,), "alias_tensor")
        return self._shape()


def float_blocks(data: bytes, header: bytes, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run of ``count`` dlib floats that follows an occurrence of ``header`` in ``data``.

    A pure-Python walk over the ~16 M leaf values of dlib's 68-point shape predictor takes
    ~20 s. Those values come in blocks (a ``matrix<float>`` each: its two dimensions, then its
    values) that all start with the same bytes, so the blocks can be found by searching for
    ``header`` and then decoded side by side: one NumPy step per token advances every block
    at once.

    A search hit inside other data would decode to garbage: callers must keep only the blocks
    their structured walk actually reaches (it checks each block start it needs is a hit).

    Returns:
        starts: (K,) byte offsets of each hit (where ``header`` begins),
        ends: (K,) byte offsets just past each block's last float,
        values: (K, count) float32.
    Raises:
        DlibFormatError: a block runs past the end of the data or has a malformed token.
    """
    found = []
    at = data.find(header)
    while at >= 0:
        found.append(at)
        at = data.find(header, at + 1)
    starts = np.array(found, np.int64)
    if not len(starts):
        return starts, starts.copy(), np.zeros((0, count), np.float32)
    padded = np.frombuffer(data + bytes(9), np.uint8)
    # Little-endian uint64 starting at every byte (unaligned, no copy): one gather reads a token.
    words = np.ndarray((len(data) + 1,), "<u8", buffer=padded, strides=(1,))
    pos = starts + len(header)
    values = np.empty((len(starts), count), np.float32)
    malformed = np.zeros(len(starts), bool)
    for i in range(count):
        mantissa = _integers(padded, words, pos, 8, malformed)
        exponent = _integers(padded, words, pos, 2, malformed)
        if (pos > len(data)).any():
            raise DlibFormatError(f"a block of {count} floats runs past the end of the file")
        column = np.ldexp(mantissa.astype(np.float64), exponent.astype(np.int32))
        special = exponent >= min(_SPECIAL_EXPONENTS)
        if special.any():
            for code, value in _SPECIAL_EXPONENTS.items():
                column[exponent == code] = value
        values[:, i] = column
    if malformed.any():
        raise DlibFormatError(f"malformed integer in the block of floats at byte {int(starts[malformed.argmax()])}")
    return starts, pos, values


def _integers(padded: np.ndarray, words: np.ndarray, pos: np.ndarray, max_bytes: int, malformed: np.ndarray) -> np.ndarray:
    """The dlib integers whose control bytes are at ``pos`` (one per block) as int64; advances
    ``pos`` past them and flags in ``malformed`` the blocks where one is not a valid integer."""
    end = len(words) - 1  # the data's length: reads past it are clamped, the caller reports them
    control = padded[np.minimum(pos, end)]
    size = control & 0x0F
    malformed |= ((control & 0x70) != 0) | (size > max_bytes)
    magnitude = (words[np.minimum(pos + 1, end)] & _LOW_BYTES[np.minimum(size, 8)]).astype(np.int64)
    pos += 1 + size
    return np.where(control & 0x80, -magnitude, magnitude)
