"""Record an anonymized live source from Python: a camera, a network stream, or a file played
at its own rate as a stand-in for one.

    python examples/camera_to_file.py /dev/video0 cabin.mp4 --seconds 60
    python examples/camera_to_file.py rtsp://192.168.1.20:8554/cam cabin.mkv --mode generate --device cuda

The same as ``streamanon stream SOURCE SINK --duration S``, written out: capture, anonymization
and encoding run on their own threads with bounded queues, so a slow frame is dropped rather than
letting the delay grow, and a frame that cannot be processed in time still goes out with every
known face blurred. Ctrl-C ends the recording cleanly (the file stays playable).
"""

from __future__ import annotations

import argparse
import signal
import sys

from streamanon import Anonymizer, UserError, load_config
from streamanon.live import StreamOptions, StreamRunner, open_sink, open_source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="/dev/videoN, rtsp://..., udp://..., or a video file")
    parser.add_argument("output", help="recording file (.mp4, .mkv, .ts)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long [until the source ends]")
    parser.add_argument("--mode", default="blur", choices=["blur", "pixelate", "solid", "generate"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()

    try:
        # As `streamanon stream` does live: the identity guard (generate mode) works on its own
        # thread, so a new face's choice of fake identity never holds the stream up.
        config = load_config(overrides={"replace.mode": args.mode, "device": args.device,
                                        "generate.guard_background": True})  # fmt: skip
        runner = StreamRunner(open_source(args.source), [open_sink(args.output)], Anonymizer(config),
                              StreamOptions(duration=args.seconds, report_every=0))  # fmt: skip
    except UserError as exc:  # no such camera, unreachable URL, unwritable output...
        print(f"error: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    summary = runner.run()
    print(summary.line())
    if summary.error:
        print(f"error: {summary.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
