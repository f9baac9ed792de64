"""Delivery follows completion: each result reaches the caller as soon as it is done
(and, in an ordered run, every result before it), whatever the chunking.

The source is read in chunks that grow 1, 2, 4 ... while the first items are
timed, and pieces are cut from chunks for the workers: neither may hold a
result back. These runs use real workers and slow items (0.05 s); the bound
(1 s) is far above the time an item takes, and below what delivering a
chunk at a time gave (a 1.4 s wait before result 63 here; 6.4 s before
result 127 with 0.1 s items).
"""

from __future__ import annotations

import time

import pytest

import ezflow

ITEM = 0.05
LATE = 1.0  # seconds: no result may wait longer than this (generous: the machine may be loaded)


def _slow(x):
    time.sleep(ITEM)
    return x


def _stamped(x):
    time.sleep(ITEM)
    return x, time.time()  # when the item was done, in the worker


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_results_arrive_as_they_are_done(mode, ordered):
    n = 120
    got: list[int] = []
    gaps: list[tuple[float, int]] = []
    last = None
    for r in ezflow.imap(mode.fn(_slow), range(n), workers=2, ordered=ordered, progress=False, **mode):
        now = time.monotonic()
        if last is not None:  # the first result also waits for the workers to start
            gaps.append((now - last, len(got)))
        last = now
        got.append(r)
    assert (got if ordered else sorted(got)) == list(range(n))
    worst, before = max(gaps)
    assert worst < LATE, f"no result for {worst:.2f} s before result {before}"


@pytest.mark.no_dask("a dask task returns its piece whole: its size comes from the measured time (~0.2 s of work)")
def test_a_long_piece_comes_back_as_its_items_finish(mode):
    # pieces of 40 items of 0.05 s (2 s of work each): the worker sends back what is done as it goes
    late = []
    stats = None
    flow = ezflow.Flow(range(60)).map(mode.fn(_stamped), workers=1, chunksize=40, **mode)
    for x, done_at in flow.iter(progress=False):
        late.append((time.time() - done_at, x))
        stats = flow.stats
    assert [x for _, x in late] == list(range(60))
    worst, item = max(late)
    assert worst < LATE, f"result {item} reached the caller {worst:.2f} s after it was done"
    assert stats is not None and stats.stages[0].items_out >= 59  # the counts follow too (the last one may lag)


def test_counts_follow_delivery_while_a_piece_runs():
    # the stats a view reads move while a long piece runs, not only when it ends
    flow = ezflow.Flow(range(40)).map(_slow, workers=1, chunksize=40, mode="thread")
    seen = []
    for i, _ in enumerate(flow.iter(progress=False)):
        if i == 9:
            seen.append(flow.stats.stages[0].items_out)
    assert seen and 10 <= seen[0] < 40


def _fails_some(x):
    time.sleep(0.03)
    if x % 7 == 3:
        raise ValueError(x)
    return x


@pytest.mark.no_dask("a dask task returns its piece whole")
def test_a_piece_sent_back_in_parts_keeps_each_failure_in_its_place(mode):
    # pieces of 20 items of 0.03 s come back in parts: each failure still belongs to its own item
    out = ezflow.map(mode.fn(_fails_some), range(60), workers=2, chunksize=20, errors="return", progress=False, **mode)
    assert [o.index for o in out if isinstance(o, ezflow.Failure)] == [x for x in range(60) if x % 7 == 3]
    assert [o for o in out if not isinstance(o, ezflow.Failure)] == [x for x in range(60) if x % 7 != 3]
