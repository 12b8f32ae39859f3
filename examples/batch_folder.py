"""Anonymize every video under a folder into a mirror folder, e.g. a day of recorded drives.

    python examples/batch_folder.py recordings/ recordings_anon/ [--mode generate] [--device cuda]

Relative paths are kept (``recordings/a/b.mp4`` -> ``recordings_anon/a/b.mp4``). Videos whose
output already exists are skipped, so an interrupted batch resumes where it stopped (each output is
written to a temporary file and renamed only when complete, so a half-written file never counts as
done). A file that fails is reported in one line and the batch goes on; the exit status is 1 if any
failed. One Anonymizer per file: clips are unrelated, so tracks (and fake identities) start anew.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamanon import UserError, anonymize_file, load_config

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".m4v", ".webm", ".ts", ".mts"}


def videos_under(folder: Path) -> list[Path]:
    """Every video file under ``folder``, sorted (hidden files and folders left out)."""
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder of videos")
    parser.add_argument("dst", type=Path, help="output folder (created; mirrors src)")
    parser.add_argument("--mode", default="blur", choices=["blur", "pixelate", "solid", "generate"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()

    if not args.src.is_dir():
        print(f"error: {args.src} is not a folder", file=sys.stderr)
        return 1
    config = load_config(overrides={"replace.mode": args.mode, "device": args.device})
    done = skipped = failed = 0
    for video in videos_under(args.src):
        target = args.dst / video.relative_to(args.src)
        if target.exists():
            skipped += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            summary = anonymize_file(video, target, config)
        except UserError as exc:  # unreadable or broken input, full disk...: next file
            print(f"FAILED {video}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{video}: {summary.line()}")
        done += 1
    print(f"{done} anonymized, {skipped} already done, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
