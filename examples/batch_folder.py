"""Anonymize a folder of recordings into a mirror folder from Python, e.g. a day of recorded drives.

    python examples/batch_folder.py recordings/ recordings_anon/ [--mode generate] [--device cuda]

The same job as ``streamanon file recordings/ recordings_anon/ --skip-existing``: every video and
photo under the folder goes to the same relative path (``recordings/a/b.mp4`` ->
``recordings_anon/a/b.mp4``); outputs that exist are left alone, so an interrupted batch resumes
where it stopped (each output is written to a temporary file and renamed only when complete, so a
half-written file never counts as done). A file that fails is reported in one line and the batch
goes on; the exit status is 1 if any failed. Each video is its own clip: tracks (and fake
identities) start anew in each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamanon import UserError, anonymize_file, load_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder of videos (and photos)")
    parser.add_argument("dst", type=Path, help="output folder (created; mirrors src)")
    parser.add_argument("--mode", default="blur", choices=["blur", "pixelate", "solid", "generate"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()

    config = load_config(overrides={"replace.mode": args.mode, "device": args.device})
    try:
        # report: one line per finished video, as it finishes (a failed file is named on stderr).
        summary = anonymize_file(args.src, args.dst, config, skip_existing=True, report=print)
    except UserError as exc:  # a missing folder, or some files failed (the rest are done)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
