"""How much the face on screen changes when the identity guard swaps a track's fake identity.

    python benchmarks/identity_swaps.py [--videos ../shared/data/videos] [--out benchmarks/results]
                                        [--fresh] [--limit N]

Generate mode on the shared face clips (the talking clips and the GRID speakers), frame by frame
through ``Anonymizer`` with the default settings. Each time a shown identity fails its re-check and
the guard picks the next one, the old and the new identity are rendered on the same face, as the
frame shows them (generator, photometric steps, paste-back), and compared:

* ``dlib_distance``: dlib's face-descriptor distance between the two (under 0.6: "the same
  person" to dlib), at the face's landmarks;
* ``pixel_change``: mean absolute change inside the face region of the aligned crop, in grey levels.

``--fresh`` hands the guard no previous identity, as before successors existed (a fresh identity
at every swap), for an A/B on the same clips. JSON goes to ``--out`` (identity-swaps-*.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
PATTERNS = ("talking_*.mp4", "grid_speaker_*.mpg")


def measure_swap(guard, face, view, old, new) -> dict:
    """How far apart ``old`` and ``new`` look on ``face`` in ``view``, rendered as the guard renders
    its candidates (the new identity's post-processing for both)."""
    codes = np.stack([old.latent, new.latent])
    crops, images = guard.render(face, codes, new.postprocess, view)
    embeddings = guard.embed(images, [view.landmarks] * 2)
    inside = face.mask > 0.5
    change = np.abs(crops[0].astype(np.int16) - crops[1].astype(np.int16))[inside].mean()
    return {"dlib_distance": round(float(np.linalg.norm(embeddings[0] - embeddings[1])), 4),
            "pixel_change": round(float(change), 2)}  # fmt: skip


def run_clip(path: Path, fresh: bool) -> list[dict]:
    """Anonymize one clip; one row per identity swap."""
    import av

    from streamanon import Anonymizer, load_config

    anonymizer = Anonymizer(load_config(overrides={"replace.mode": "generate"}))
    guard = anonymizer.guard
    choose = guard.choose
    swaps: list[dict] = []
    frame_index = [0]

    def watched(face, seed, view=None, previous=None):
        choice = choose(face, seed, view, None if fresh else previous)
        if previous is not None and previous.safe and choice.safe:
            row = {"clip": path.name, "frame": frame_index[0], "track": face.track_id,
                   "successor": choice.attempt >= guard.candidates, "new_distance": round(choice.distance, 4),
                   "tried": choice.tried}  # fmt: skip
            swaps.append({**row, **measure_swap(guard, face, view, previous, choice)})
        return choice

    guard.choose = watched
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            frame_index[0] = index
            anonymizer.process(frame.to_ndarray(format="rgb24"))
    return swaps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--fresh", action="store_true", help="No successors: a fresh identity at every swap.")
    parser.add_argument("--limit", type=int, default=0, help="Only the first N clips (0: all).")
    args = parser.parse_args()
    clips = sorted(p for pattern in PATTERNS for p in args.videos.glob(pattern))[: args.limit or None]
    if not clips:
        print(f"no face videos under {args.videos}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    swaps = []
    for clip in clips:
        swaps.extend(run_clip(clip, args.fresh))
    for s in swaps:
        print(f"{s['clip']} frame {s['frame']}: dlib distance {s['dlib_distance']:.3f}, "
              f"pixel change {s['pixel_change']:.1f}{' (successor)' if s['successor'] else ''}")  # fmt: skip
    distances = [s["dlib_distance"] for s in swaps]
    changes = [s["pixel_change"] for s in swaps]
    totals = {
        "clips": len(clips),
        "swaps": len(swaps),
        "successors": sum(s["successor"] for s in swaps),
        "dlib_distance_median": round(float(np.median(distances)), 4) if swaps else None,
        "same_person_share": round(float(np.mean(np.array(distances) < 0.6)), 4) if swaps else None,
        "pixel_change_median": round(float(np.median(changes)), 2) if swaps else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"identity-swaps-{'fresh-' if args.fresh else ''}{stamp}.json"
    summary = {"date": stamp, "fresh": args.fresh, "totals": totals, "swaps": swaps}
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(clips)} clips: {totals['swaps']} swaps ({totals['successors']} successors), median dlib distance "
          f"old -> new {totals['dlib_distance_median']}, median pixel change {totals['pixel_change_median']} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
