"""Counters several threads write, and a panel reads while they run, add up exactly.

Many threads feed one running flow and others read its stats all along; the
thread switch interval is made tiny so that a counter written without its
lock (a read-modify-write two workers interleave) would lose updates here.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import Future

import pytest

import ezflow

FEEDERS = 8
PER_FEEDER = 1500
N = FEEDERS * PER_FEEDER


@pytest.fixture
def tiny_switch_interval():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _fail_some(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(x)
    return x


def _fail_others(x: int) -> int:
    if x % 11 == 0:
        raise KeyError(x)
    return x


@pytest.mark.timeout(120)
def test_many_threads_feeding_and_reading_stats_give_exact_totals(tiny_switch_interval):
    handle = (
        ezflow.Flow()
        .map(_fail_some, mode="thread", workers=8, chunksize=3, errors="skip", name="skip7")
        .filter(lambda x: x % 3 != 0, mode="thread", workers=8, chunksize=2, name="drop3")
        .map(_fail_others, mode="thread", workers=8, chunksize=1, errors="return", name="ret11")
        .start(progress=False)
    )
    futures: list[list[Future]] = [[] for _ in range(FEEDERS)]
    reading = threading.Event()
    seen: list[int] = []

    def feed(k: int) -> None:
        for i in range(PER_FEEDER):
            x = k * PER_FEEDER + i
            if i % 2:
                futures[k].append(handle.submit(x))
            else:
                handle.put(x)

    def read() -> None:
        while not reading.is_set():
            stats = handle.stats
            seen.append(sum(s.items_in for s in stats.stages))

    readers = [threading.Thread(target=read, daemon=True) for _ in range(3)]
    feeders = [threading.Thread(target=feed, args=(k,), daemon=True) for k in range(FEEDERS)]
    try:
        for t in readers + feeders:
            t.start()
        for t in feeders:
            t.join(60)
        handle.close()
        handle.wait(60)  # before the fix: "dictionary changed size during iteration" (Handle._resolve)
    finally:
        reading.set()
        handle.cancel()
        for t in readers:
            t.join(10)

    xs = range(N)
    skipped = sum(1 for x in xs if x % 7 == 0)
    after_skip = [x for x in xs if x % 7]
    dropped = sum(1 for x in after_skip if x % 3 == 0)
    kept = [x for x in after_skip if x % 3]
    failed = sum(1 for x in kept if x % 11 == 0)
    s1, s2, s3 = handle.stats.stages
    assert (s1.items_in, s1.skipped, s1.errors, s1.items_out) == (N, skipped, 0, N - skipped)
    assert (s2.items_in, s2.filtered, s2.items_out) == (len(after_skip), dropped, len(kept))
    assert (s3.items_in, s3.errors, s3.items_out) == (len(kept), failed, len(kept) - failed)  # out: results, not failures
    assert seen, "the readers read nothing"
    # every Future settles: a value, None (dropped by the skip or the filter) or the item's error
    for k in range(FEEDERS):
        for i, fut in enumerate(futures[k]):
            x = k * PER_FEEDER + 2 * i + 1
            if x % 7 == 0 or x % 3 == 0:
                assert fut.result(10) is None, x
            elif x % 11 == 0:
                with pytest.raises((KeyError, ezflow.TaskError), match=str(x)):  # its type, or TaskError
                    fut.result(10)
            else:
                assert fut.result(10) == x
