"""Mappings kept between items (ezflow/_transport/kept.py), with real workers and real shared memory.

A worker keeps its mapping of a segment after the item's views are gone,
and finds it again when the owner reuses that segment. What must hold:
what a worker wrote into its copy-on-write view never shows in a later
item; a result the caller keeps is never written over; nothing is left in
/dev/shm, nor mapped once the segments are gone (the autouse `no_leaks`
fixture checks /dev/shm after every test).
"""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import psutil
import pytest

import ezflow
from ezflow._executors import worker as _worker
from ezflow._transport import segments as _segments
from ezflow._transport import shm as _shm

pytestmark = pytest.mark.skipif(not os.path.isdir(_shm.SHM_DIR), reason="needs /dev/shm")

ELEMS = (2 << 20) // 8  # 2 MiB of float64: shared by default


def marked(i: int) -> np.ndarray:
    return np.full(ELEMS, float(i))


def check_then_scribble(a: np.ndarray) -> tuple:
    """What this item's view holds, where it is mapped; then write over all of it (copy-on-write)."""
    m = _segments._root(a)
    seen = (float(a.min()), float(a.max()))
    a[:] = -1.0
    return seen, m.name if m is not None else None, m.addr if m is not None else None


def make(i: int) -> np.ndarray:
    return np.full(ELEMS, float(i))


def scale(a: np.ndarray) -> np.ndarray:
    return a * 2 + 1


def _mapped_segments(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return [line.split()[-1] for line in f if f"/{_shm.PREFIX}" in line]
    except OSError:
        return []


def test_a_reused_segment_never_shows_what_a_worker_wrote_before():
    # one worker, items one after another: the owner reuses the same few segments,
    # and the worker finds its kept (written-over) mapping of them again
    n = 40
    out = ezflow.map(check_then_scribble, (marked(i) for i in range(n)), workers=1, progress=False)
    for i, (seen, _name, _addr) in enumerate(out):
        assert seen == (float(i), float(i)), f"item {i} saw {seen}"
    places = [(name, addr) for _seen, name, addr in out]
    assert None not in {name for name, _ in places}, "the inputs did not travel through shared memory"
    assert len(set(places)) < n, "no segment was reused at the same address: the kept mapping was not used"


def test_two_stages_with_reuse_give_every_item_its_own_data():
    for _ in range(3):  # runs one after another reuse the pool, and every mapping kept from the last run
        flow = ezflow.Flow(marked(i) for i in range(24))
        got = flow.map(check_then_scribble, workers=2).collect(progress=False)
        assert [seen for seen, _, _ in got] == [(float(i), float(i)) for i in range(24)]


def test_results_the_caller_keeps_are_never_written_over():
    kept = ezflow.map(make, range(8), workers=2, progress=False)
    assert all(_segments._root(a) is not None for a in kept), "the results did not come back shared"
    for run in range(4):  # later runs write their results into pooled segments, through kept mappings
        later = ezflow.map(make, range(100 + 10 * run, 108 + 10 * run), workers=2, progress=False)
        assert [a[0] for a in later] == [float(i) for i in range(100 + 10 * run, 108 + 10 * run)]
        del later
    for i, a in enumerate(kept):
        assert a.min() == a.max() == float(i), f"result {i} was written over"


def test_shared_source_arrays_written_once_and_reused():
    for _ in range(3):
        src = [ezflow.share(marked(i)) for i in range(12)]
        got = ezflow.map(check_then_scribble, src, workers=2, progress=False)
        # share()d data is one memory: the workers' writes are seen here, and each saw its own data
        assert [seen for seen, _, _ in got] == [(float(i), float(i)) for i in range(12)]
        assert all(a.max() == -1.0 for a in src)
        del src, got
        gc.collect()


def test_nothing_stays_mapped_once_the_segments_are_gone(monkeypatch):
    monkeypatch.setattr(_worker, "IDLE_SECONDS", 0.2)  # read by workers forked from now on
    ezflow.shutdown()  # no warm pool: the workers below are new
    out = ezflow.Flow(marked(i) for i in range(16)).map(scale, workers=2).collect(progress=False)
    del out
    gc.collect()
    workers = [p.pid for p in psutil.Process().children(recursive=True)]
    assert _mapped_segments(os.getpid()), "nothing was kept mapped here: the test tests nothing"
    _shm.flush_pool()  # unlink the pooled segments: the kept mappings of them must go too
    deadline = time.monotonic() + 10
    left: dict = {}
    while time.monotonic() < deadline:
        left = {pid: _mapped_segments(pid) for pid in [os.getpid(), *workers]}
        left = {pid: names for pid, names in left.items() if names}
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"segments still mapped after they were unlinked: {left}"
