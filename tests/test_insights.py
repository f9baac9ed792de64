"""Stage insights in code: workers' time, the running item, the slowest pieces, every failure (capped)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

import ezflow
from ezflow._core.insights import FAILURES_KEPT, SLOWEST, TEXT_KEPT

MODES = [
    pytest.param({"mode": "thread"}, id="thread"),
    pytest.param({"mode": "process", "start_method": "fork"}, id="process"),
    pytest.param({"mode": "async"}, id="async"),
]


def fails_on_sevens(x):
    if x % 7 == 3:
        raise ValueError(f"no {x}")
    return x


async def afails_on_sevens(x):
    await asyncio.sleep(0)
    return fails_on_sevens(x)


def naps_on_zero(x):
    if x == 0:
        time.sleep(1.5)
    return x


async def anaps_on_zero(x):
    if x == 0:
        await asyncio.sleep(1.5)
    return x


def _fn(opts: dict, sync, coro):
    return coro if opts["mode"] == "async" else sync


@pytest.mark.timeout(60)
@pytest.mark.parametrize("opts", MODES)
def test_records_after_a_run(opts):
    fn = _fn(opts, fails_on_sevens, afails_on_sevens)
    flow = ezflow.Flow(range(60)).map(fn, workers=2, errors="skip", **opts)
    out = flow.collect()
    s = flow.stats.stages[0]

    assert len(out) == 60 - s.skipped
    # every failure is listed, with what went in and what was raised
    assert len(s.failures) == s.skipped == sum(1 for x in range(60) if x % 7 == 3)
    assert s.failures_omitted == 0
    assert [f.index for f in s.failures] == [x for x in range(60) if x % 7 == 3]  # in source order
    for f in s.failures:
        assert f.error == "ValueError"
        assert f.message == f"no {f.index}"
        assert f.input == repr(f.index)
        assert "ValueError" in f.traceback and "fails_on_sevens" in f.traceback
        assert repr(f).endswith(f"message='no {f.index}', traceback=<{len(f.traceback.splitlines())} lines>)")

    # one record per worker, all their items accounted for, nobody running now
    assert [w.id for w in s.worker_stats] == [0, 1]
    assert sum(w.items for w in s.worker_stats) == 60
    for w in s.worker_stats:
        assert w.alive and w.current_item is None and w.current_for_s == 0.0
        assert (w.busy_s > 0) == (w.items > 0)  # (startup, busy and waiting are clamped at 0: no check there)
        if opts["mode"] == "process":
            assert isinstance(w.pid, int) and w.pid != os.getpid()
        else:
            assert w.pid is None
    # the slowest, slowest first, each naming its input
    assert 1 <= len(s.slowest) <= SLOWEST
    assert [x.seconds for x in s.slowest] == sorted((x.seconds for x in s.slowest), reverse=True)
    for x in s.slowest:
        assert x.input == repr(x.index) and x.items >= 1 and x.seconds > 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("opts", MODES)
def test_a_running_item_and_its_age_are_visible_while_it_runs(opts):
    fn = _fn(opts, naps_on_zero, anaps_on_zero)
    handle = ezflow.Flow(range(20)).map(fn, workers=2, chunksize=1, **opts).start()
    try:
        seen = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and seen is None:
            for w in handle.stats.stages[0].worker_stats:
                if w.current_item == 0 and w.current_for_s > 0.3:
                    seen = w
            time.sleep(0.05)
        assert seen is not None, handle.stats.stages[0].worker_stats
        assert seen.alive
        live = handle.stats.stages[0]
        # the running item counts as busy time before it ends
        assert live.working_seconds >= live.busy_seconds + seen.current_for_s
        assert live.busy > 0
    finally:
        handle.wait()
    s = handle.stats.stages[0]
    assert all(w.current_item is None for w in s.worker_stats)
    assert s.slowest[0].index == 0 and s.slowest[0].items == 1  # a whole second ahead of the others


@pytest.mark.timeout(60)
def test_failures_past_the_cap_are_counted_not_kept():
    n = FAILURES_KEPT + 30
    flow = ezflow.Flow(range(n)).map(fails_on_sevens_always, mode="thread", workers=2, errors="skip")
    assert flow.collect() == []
    s = flow.stats.stages[0]
    assert len(s.failures) == FAILURES_KEPT
    assert s.failures_omitted == 30
    assert len({f.index for f in s.failures}) == FAILURES_KEPT


def fails_on_sevens_always(x):
    raise KeyError(x)


@pytest.mark.timeout(60)
def test_returned_and_raised_failures_are_listed_too():
    flow = ezflow.Flow(range(10)).map(fails_on_sevens, mode="thread", workers=1, errors="return")
    out = flow.collect()
    s = flow.stats.stages[0]
    assert [f.index for f in s.failures] == [3]
    assert isinstance(out[3], ezflow.Failure)

    flow = ezflow.Flow(range(10)).map(fails_on_sevens, mode="thread", workers=1, chunksize=1)
    with pytest.raises(ezflow.TaskError):
        flow.collect()
    assert [f.index for f in flow.stats.stages[0].failures] == [3]


@pytest.mark.timeout(60)
def test_inputs_are_shown_short():
    items = ["x" * 500, list(range(1000))]
    flow = ezflow.Flow(items).map(fails_on_len, mode="thread", workers=1, errors="skip")
    flow.collect()
    for f in flow.stats.stages[0].failures:
        assert len(f.input) <= 80
    for x in flow.stats.stages[0].slowest:
        assert len(x.input) <= 80


def fails_on_len(x):
    raise ValueError(len(x))


def sleeps_forever_on_one(x):
    if x == 1:
        time.sleep(3)
    return x


@pytest.mark.timeout(60)
def test_a_thread_worker_replaced_after_a_timeout_is_kept_as_gone():
    flow = ezflow.Flow(range(6)).map(
        sleeps_forever_on_one, mode="thread", workers=2, item_timeout=0.3, errors="skip"
    )
    flow.collect()
    s = flow.stats.stages[0]
    gone = [w for w in s.worker_stats if not w.alive]
    assert len(gone) == 1 and gone[0].current_item is None
    assert len(s.worker_stats) == 3  # the replacement too
    assert [f.error for f in s.failures] == ["ItemTimeout"]


def kill_self_on_three(x):
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@pytest.mark.timeout(60)
def test_a_dead_process_worker_and_its_replacement():
    flow = ezflow.Flow(range(8)).map(
        kill_self_on_three, mode="process", start_method="fork", workers=2, chunksize=1, errors="skip"
    )
    flow.collect()
    s = flow.stats.stages[0]
    gone = [w for w in s.worker_stats if not w.alive]
    assert len(gone) == 1
    live = [w for w in s.worker_stats if w.alive]
    assert len(live) == 2 and gone[0].pid not in {w.pid for w in live}
    assert [f.error for f in s.failures] == ["WorkerDied"] and s.failures[0].index == 3


@pytest.mark.timeout(120)
def test_every_backend_lists_failures_and_slowest(mode):
    flow = ezflow.Flow(range(30)).map(mode.fn(fails_on_sevens), workers=2, errors="skip", **mode)
    flow.collect()
    s = flow.stats.stages[0]
    assert [f.index for f in s.failures] == [3, 10, 17, 24]
    assert {f.error for f in s.failures} == {"ValueError"}
    assert 1 <= len(s.slowest) <= SLOWEST and sum(x.items for x in s.slowest) <= 30
    if "backend" in mode:  # dask workers are the cluster's: no per-worker rows
        assert s.worker_stats == ()
    else:
        assert sum(w.items for w in s.worker_stats) == 30


def shouts(x):
    raise ValueError("A" + "x" * 50_000 + "Z")


@pytest.mark.timeout(60)
def test_a_huge_message_and_traceback_keep_their_start_and_end():
    flow = ezflow.Flow([0]).map(shouts, mode="thread", workers=1, errors="skip")
    flow.collect()
    (f,) = flow.stats.stages[0].failures
    assert f.error == "ValueError"
    assert len(f.message) <= TEXT_KEPT + 100 and f.message.startswith("Ax") and f.message.endswith("xZ")
    assert "characters cut" in f.message
    assert len(f.traceback) <= TEXT_KEPT + 100 and "characters cut" in f.traceback
    assert f.traceback.startswith("Traceback") and f.traceback.rstrip().endswith("xZ")


@pytest.mark.timeout(60)
def test_recycled_process_workers_keep_their_rows():
    flow = ezflow.Flow(range(12)).map(
        fails_on_sevens, mode="process", start_method="fork", workers=2, max_tasks_per_worker=3, errors="skip"
    )
    flow.collect()
    s = flow.stats.stages[0]
    assert s.workers_recycled >= 2
    gone = [w for w in s.worker_stats if not w.alive]
    assert len(gone) >= 2 and all(w.items <= 3 for w in s.worker_stats)
    assert sum(w.items for w in s.worker_stats) == 12
    assert len({w.id for w in s.worker_stats}) == len(s.worker_stats)


def test_a_big_bytes_item_is_described_without_building_its_whole_repr():
    from ezflow._core.errors import short_repr

    big = b"ab" * 10_000_000
    text = short_repr(big)
    assert text.startswith("b'abab") and text.endswith("...<20,000,000 bytes>") and len(text) < 80
    assert short_repr(bytearray(big)).endswith("...<20,000,000 bytes>)")
    assert short_repr(memoryview(big)) == "<memoryview of 20,000,000 bytes>"
    assert short_repr(b"abc") == "b'abc'"
