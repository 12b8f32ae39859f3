"""Per-stage latency benchmark: the same as ``streamanon bench`` (see ``streamanon bench --help``).

    python benchmarks/bench_stages.py                       # full run: clip + 12 synthetic scenes, 3 modes
    python benchmarks/bench_stages.py --no-clip --resolutions 640x360 --face-counts 1,4 --frames 5 --repeats 1

Prints the tables and writes JSON (device, versions, settings, every repeat, medians) to
benchmarks/results/stages-<device>-<date>-<time>.json. The code lives in ``streamanon.bench``.
"""

from __future__ import annotations

import sys

from streamanon.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
