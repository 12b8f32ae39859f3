"""The faces log: what was hidden where, frame by frame, as JSON Lines (``streamanon file --faces-log``).

One line per frame that was processed::

    {"source": "day1/cab.mp4", "frame": 12, "time": 0.48,
     "faces": [{"track": 3, "box": [x1, y1, x2, y2], "detected": true, "how": "generated",
                "fallback": false, "landmarks": [[x, y], ... 68 points]}]}

- ``source``: the input file (relative to the input folder in a folder run);
- ``frame``: index in that file (0 for a photo); ``time``: its timestamp in seconds, or null;
- ``track``: the face's id, stable across the frames of one source (it starts anew in each);
- ``box``: the region replaced (before ``replace.margin`` grows it), in pixels of the frame as a
  player shows it (a rotated phone clip: upright);
- ``detected``: false while the face is hidden on its predicted box, the detector having lost it;
- ``how``: ``generated``, or the mode that hid it (``blur``, ``pixelate``, ``solid``);
  ``fallback``: generate mode could not generate this face in this frame and blurred it;
- ``landmarks``: generated faces only, the 68 points (dlib order) the new face was given: the
  original's expression and pose, which the anonymized video keeps anyway.

The file is written under a hidden temporary name beside its destination and renamed when the run
ends, also when some files of a folder failed (the log then holds the ones done); nothing is left
if the run stops on an error or an interruption.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import TracebackType

from .types import FrameStats, HiddenFace

# Pixel coordinates are written with this many decimals: sub-pixel, and a short line.
DECIMALS = 1


class FacesLog:
    """Writes the faces log to ``path``; use as a context manager (commits on a clean exit)."""

    def __init__(self, path: str | Path) -> None:
        from .io.paths import atomic_output

        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        temporary = self._stack.enter_context(atomic_output(self.path))
        self._file = self._stack.enter_context(open(temporary, "w", encoding="utf-8"))
        self.frames = 0

    def write(self, source: str, frame: int, time: float | None, stats: FrameStats) -> None:
        """Add one processed frame of ``source``."""
        record = {
            "source": source,
            "frame": int(frame),
            "time": None if time is None else round(float(time), 6),
            "faces": [_face_record(face) for face in stats.hidden],
        }
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.frames += 1

    def mark(self) -> tuple[int, int]:
        """Where the log stands now, for :meth:`rewind`."""
        self._file.flush()
        return self._file.tell(), self.frames

    def rewind(self, mark: tuple[int, int]) -> None:
        """Drop what was written since ``mark`` (the frames of a video that then failed, whose output
        was not kept)."""
        offset, self.frames = mark
        self._file.flush()
        self._file.seek(offset)
        self._file.truncate()

    def __enter__(self) -> FacesLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool | None:  # fmt: skip
        # atomic_output renames the temporary file on a clean exit and deletes it on an error.
        return self._stack.__exit__(kind, error, traceback)


def _face_record(face: HiddenFace) -> dict:
    record = {
        "track": face.track_id,
        "box": [round(float(v), DECIMALS) for v in face.box],
        "detected": bool(face.detected),
        "how": face.how,
        "fallback": bool(face.fallback),
    }
    if face.landmarks is not None:
        record["landmarks"] = [[round(float(x), DECIMALS), round(float(y), DECIMALS)] for x, y in face.landmarks]
    return record


def read_faces_log(path: str | Path) -> list[dict]:
    """The records of a faces log, in order (for tests and analysis scripts)."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
