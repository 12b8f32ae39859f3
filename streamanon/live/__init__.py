"""Live streams: ``streamanon stream SOURCE SINK`` with bounded latency and fail-closed output.

Capture, processing and output run on their own threads joined by bounded queues
(:mod:`.runner`); sources (:mod:`.sources`) and sinks (:mod:`.sinks`) are picked from the
command line's SOURCE and SINK. Python use::

    from streamanon import Anonymizer
    from streamanon.live import StreamOptions, StreamRunner, open_sink, open_source

    runner = StreamRunner(open_source("udp://127.0.0.1:5000"), [open_sink("rec.mp4")],
                          Anonymizer(), StreamOptions(duration=60))
    summary = runner.run()
"""

from .latency import LatencyStats, LatencySummary
from .queues import FrameQueue
from .runner import StreamOptions, StreamRunner, StreamSummary
from .sinks import EncodedSink, PreviewSink, RawSink, Sink, SinkSettings, open_sink
from .sources import AVSource, RawSource, Source, SourceSettings, open_source
from .timeline import Timeline

__all__ = [
    "AVSource",
    "EncodedSink",
    "FrameQueue",
    "LatencyStats",
    "LatencySummary",
    "PreviewSink",
    "RawSink",
    "RawSource",
    "Sink",
    "SinkSettings",
    "Source",
    "SourceSettings",
    "StreamOptions",
    "StreamRunner",
    "StreamSummary",
    "Timeline",
    "open_sink",
    "open_source",
]
