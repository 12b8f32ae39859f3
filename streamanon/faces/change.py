"""Did the picture change where a face could have come in? (``--detect-every N`` between full passes)

Between full-frame detections the pipeline searches only around the faces it tracks. A face that
comes in meanwhile stays unseen until the next full pass: one entering at the frame's edge, or
every face after a cut to another view (a privacy audit showed both). This watch compares each
frame with the one before on a grey thumbnail (1/16 of the size, so noise averages out) and asks
for a full pass when the edge ring changed, or much of the picture outside the tracked faces did.
A face that appears in the middle of an otherwise still picture (from behind a door) is still
found up to N-1 frames late.
"""

from __future__ import annotations

import cv2
import numpy as np

# Thumbnail cells are this many pixels on a side.
CELL = 16
# A cell changed when its mean grey level moved by more than this (noise and compression stay
# well below it once averaged over a cell).
CHANGE_LEVELS = 12.0
# The edge ring, in cells: a face entering shows here first.
EDGE_CELLS = 2
# A cut or a camera pan: this share of the cells outside the tracked faces changed.
CUT_SHARE = 0.3
# Tracked faces move: their boxes are grown by this fraction on each side before they are left out.
FACE_GROWTH = 0.5


class ChangeWatch:
    """Remembers the last frame's thumbnail; :meth:`needs_full_pass` compares the next one with it."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def remember(self, image: np.ndarray) -> None:
        """Take ``image`` as the frame before the next one (a frame searched in full anyway)."""
        self._previous = _thumbnail(image)

    def needs_full_pass(self, image: np.ndarray, face_boxes: np.ndarray) -> bool:
        """Whether ``image`` changed, outside ``face_boxes`` (N, 4: x1 y1 x2 y2), from the frame
        before enough that a face may have come in; True for the first frame. Remembers ``image``."""
        thumb = _thumbnail(image)
        previous, self._previous = self._previous, thumb
        if previous is None or previous.shape != thumb.shape:
            return True
        changed = np.abs(thumb - previous) > CHANGE_LEVELS
        outside = np.ones_like(changed)
        rows, cols = changed.shape
        for x1, y1, x2, y2 in np.asarray(face_boxes, np.float64).reshape(-1, 4):
            grow_x, grow_y = FACE_GROWTH * (x2 - x1), FACE_GROWTH * (y2 - y1)
            c1, r1 = int(max(0, (x1 - grow_x) // CELL)), int(max(0, (y1 - grow_y) // CELL))
            c2, r2 = int(min(cols, -(-(x2 + grow_x) // CELL))), int(min(rows, -(-(y2 + grow_y) // CELL)))
            outside[r1:r2, c1:c2] = False
        ring = np.zeros_like(changed)
        ring[:EDGE_CELLS], ring[-EDGE_CELLS:], ring[:, :EDGE_CELLS], ring[:, -EDGE_CELLS:] = True, True, True, True
        if (changed & outside & ring).any():
            return True
        return bool(outside.any() and (changed & outside).sum() > CUT_SHARE * outside.sum())


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """Grey, one value per CELL x CELL block (area average), float32."""
    height, width = image.shape[:2]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    size = (max(1, width // CELL), max(1, height // CELL))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)
