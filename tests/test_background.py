"""Reading ahead and writing behind on threads: order, bounded lookahead, errors, early stops."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from streamanon.io.background import WriteBehind, read_ahead


def test_read_ahead_keeps_order_and_runs_on_another_thread():
    threads = []

    def source():
        for i in range(50):
            threads.append(threading.current_thread().name)
            yield i

    assert list(read_ahead(source(), depth=3, name="reader-x")) == list(range(50))
    assert set(threads) == {"reader-x"}


def test_read_ahead_raises_the_producers_error_where_it_happened():
    def source():
        yield from range(5)
        raise ValueError("damaged at 5")

    got = []
    with pytest.raises(ValueError, match="damaged at 5"):
        for item in read_ahead(source(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_read_ahead_stays_within_its_depth_and_stops_when_closed():
    produced = itertools.count()
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield next(produced)
        finally:
            closed.set()  # the source is closed on the reading thread

    items = read_ahead(endless(), depth=4)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    time.sleep(0.3)  # let the thread run as far ahead as it may
    made = next(produced)  # the counter's next value: how many the thread took
    assert 3 <= made <= 3 + 4 + 1  # consumed + queue depth + the one waiting to be offered
    items.close()
    assert closed.wait(2.0)
    assert not any(t.name == "streamanon-read" for t in threading.enumerate())


def test_read_ahead_rejects_a_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        next(read_ahead([1], depth=0))


def test_write_behind_runs_calls_in_order_on_its_thread():
    done, threads = [], set()

    def record(i):
        threads.add(threading.current_thread().name)
        done.append(i)

    with WriteBehind(depth=2, name="writer-x") as output:
        for i in range(30):
            output.submit(record, i)
    assert done == list(range(30)) and threads == {"writer-x"}


def test_write_behind_raises_the_first_failure_and_skips_the_rest():
    done = []

    def write(i):
        if i == 3:
            raise OSError("disk full")
        done.append(i)

    with pytest.raises(OSError, match="disk full"):
        with WriteBehind(depth=2) as output:
            for i in range(100):
                output.submit(write, i)
                time.sleep(0.001)
    assert done == [0, 1, 2]


def test_write_behind_drops_waiting_calls_when_the_caller_fails():
    started, release, done = threading.Event(), threading.Event(), []

    def slow(i):
        started.set()
        release.wait(2.0)
        done.append(i)

    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(depth=4) as output:
            for i in range(4):
                output.submit(slow, i)
            started.wait(2.0)
            threading.Timer(0.2, release.set).start()
            raise KeyboardInterrupt
    assert done == [0]  # the call under way finished; the three waiting ones did not run


def test_a_job_that_stops_early_does_not_hang_on_a_stuck_thread(monkeypatch):
    """Ctrl-C or SIGTERM while a decode or encode thread is stuck (a signal's exception inside a
    queue operation can leave it waiting for good): leaving the block waits only GIVE_UP_S."""
    import streamanon.io.background as background

    monkeypatch.setattr(background, "GIVE_UP_S", 0.2)
    release = threading.Event()

    def stuck_after_one():
        yield 1
        release.wait()  # the producer never gets further
        yield 2

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in read_ahead(stuck_after_one()):
            raise KeyboardInterrupt
    assert time.monotonic() - started < 2.0
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(depth=1) as output:
            output.submit(release.wait)  # the write thread is stuck in this call
            raise KeyboardInterrupt
    assert time.monotonic() - started < 2.0
    release.set()
