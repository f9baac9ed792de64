"""Background runs: flow.start() and its Handle."""

from __future__ import annotations

import time

import pytest

import ezflow


def slow(x):
    time.sleep(0.05)
    return x * 2


def test_start_returns_at_once_and_wait_gives_results(mode):
    t0 = time.monotonic()
    handle = ezflow.Flow(range(40)).map(mode.fn(slow), workers=2, **mode).start(progress=False)
    assert time.monotonic() - t0 < 5
    assert not handle.done()
    assert handle.stats.state == "running"
    assert handle.wait(timeout=60) == [x * 2 for x in range(40)]
    assert handle.done() and handle.stats.state == "done"


def test_cancel_keeps_finished_results_and_stops_workers(mode):
    handle = ezflow.Flow(range(1000)).map(mode.fn(slow), workers=2, **mode).start(progress=False)
    time.sleep(0.5)
    t0 = time.monotonic()
    report = handle.cancel()
    assert time.monotonic() - t0 < 3
    assert handle.done() and handle.stats.state == "cancelled"
    kept = handle.wait()
    assert kept == [x * 2 for x in range(len(kept))]
    assert report["kept"] == len(kept) and report["unfinished"] >= 0


def test_wait_timeout_and_error():
    handle = ezflow.Flow(range(10)).map(slow, mode="thread").start(progress=False)
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.001)
    handle.wait(60)
    bad = ezflow.Flow([1, 0]).map(lambda x: 1 // x, mode="thread").start(progress=False)
    with pytest.raises(ezflow.TaskError):
        bad.wait(60)


class SlowStart:
    def __init__(self):
        time.sleep(3)

    def __call__(self, x):
        return x


def test_start_timeout_names_slow_stage():
    with pytest.raises(TimeoutError, match="SlowStart"):
        ezflow.Flow(range(3)).map(SlowStart, mode="thread", workers=1).start(timeout=0.5, progress=False)
