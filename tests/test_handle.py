"""Background runs: flow.start() and its Handle."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

import ezflow


def _wait_for_results(handle, n: int, within: float = 60) -> None:
    """Wait until the handle has `n` results (polled: results arrive on the run's thread)."""
    deadline = time.monotonic() + within
    while len(handle.results) < n:
        assert time.monotonic() < deadline, f"fewer than {n} results after {within} s"
        time.sleep(0.01)


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
    _wait_for_results(handle, 2)
    t0 = time.monotonic()
    report = handle.cancel()
    assert time.monotonic() - t0 < 3
    assert handle.done() and handle.stats.state == "cancelled"
    kept = handle.wait()
    assert kept == [x * 2 for x in range(len(kept))]
    assert report["kept"] == len(kept) >= 2 and report["unfinished"] > 0  # items were in flight


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


def test_cancel_summary_is_a_named_record_that_still_reads_as_the_dict():
    from ezflow._engine.handle import CancelSummary

    release, waiting = threading.Event(), threading.Event()

    def held(x: int) -> int:
        if x >= 20:  # taken by the stage, never finished before the cancel
            waiting.set()
            release.wait(30)
        return x

    handle = ezflow.Flow(range(100)).map(held, mode="thread", workers=2, chunksize=1).start(progress=False)
    unblock = threading.Timer(0.2, release.set)  # a thread worker stops after its item: let it end
    try:
        assert waiting.wait(30)
        unblock.start()
        summary = handle.cancel()
    finally:
        unblock.cancel()
        release.set()
    assert isinstance(summary, CancelSummary)
    assert summary.kept == summary["kept"] == len(handle.wait())
    assert summary.unfinished == summary["unfinished"] > 0
    assert summary == {"kept": summary.kept, "unfinished": summary.unfinished}  # as the dict it was
    assert dict(summary) == {"kept": summary.kept, "unfinished": summary.unfinished}
    with pytest.raises(KeyError):
        summary["other"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.kept = 0  # type: ignore[misc]
