"""Use streamanon from Python: a whole file, then frame by frame.

    python examples/python_api.py INPUT.mp4 OUTPUT.mp4
"""

import sys

import av

from streamanon import Anonymizer, anonymize_file, load_config

src, dst = sys.argv[1], sys.argv[2]

# 1. A whole file (audio, timestamps and rotation are kept).
summary = anonymize_file(src, dst, load_config(overrides={"replace.mode": "pixelate"}), overwrite=True)
print(summary.line())

# 2. Frame by frame, e.g. from your own capture loop: one Anonymizer per camera keeps the tracks.
anonymizer = Anonymizer(load_config(overrides={"replace.mode": "blur"}))
with av.open(src) as container:
    for index, frame in enumerate(container.decode(video=0)):
        # (H, W, 3) uint8 RGB; the frame's time keeps the tracking right at any frame rate
        out = anonymizer.process(frame.to_ndarray(format="rgb24"), timestamp=frame.time)
        if index == 0:
            print("first frame anonymized:", out.shape, out.dtype)
