"""Worker lifespans on real processes: max_tasks_per_worker recycles, max_memory guards.

Each test runs a real pool (fork and spawn where the start method matters);
memory figures are measured, never assumed: limits are set above what this
machine's workers use at rest.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ezflow
from ezflow._plan.lifespan import parse_memory

pytestmark = pytest.mark.timeout(90)

MB = 10**6
LEAK = 50 * MB
METHODS = ["fork", "spawn"]
_leaked: list[bytes] = []


def own_rss(_):
    return psutil.Process().memory_info().rss


def _rest_rss(start_method: str = "fork") -> int:
    """The RSS of this test's workers at rest, measured in them: a forked worker counts this
    process's pages (large late in a test session), a spawned one only its own."""
    return max(ezflow.map(own_rss, range(2), workers=2, start_method=start_method, progress=False))


def leak_50mb(x):
    _leaked.append(b"\x01" * LEAK)  # written, so resident (a zeroed buffer may not be)
    time.sleep(0.01)
    return x * 2


def hog_on_three(x, extra: int = 0):
    if x == 3:
        block = b"\x01" * extra
        time.sleep(1.0)  # the sampler sees it while the item runs
        del block
    return x


def pid_of(x):
    return (x, os.getpid())


def die_by_sigkill(x):
    if x == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


class Counted:
    """A class stage that writes its builds and closes to a file (one line each, with the pid)."""

    def __init__(self):
        self.path = os.environ["EZFLOW_TEST_LIFE_LOG"]
        with open(self.path, "a") as f:
            f.write(f"init {os.getpid()}\n")

    def __call__(self, x):
        return (x, os.getpid())

    def close(self):
        with open(self.path, "a") as f:
            f.write(f"close {os.getpid()}\n")


class CallLog:
    """A function that appends the item it runs to a file: how many times each item ran."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, x):
        with open(self.path, "a") as f:
            f.write(f"{x} {os.getpid()}\n")
        return x


# -- max_memory --------------------------------------------------------------------


@pytest.mark.parametrize("start_method", METHODS)
def test_a_leaking_worker_is_replaced_and_the_run_completes(start_method):
    limit = _rest_rss(start_method) + 250 * MB  # five leaks over a worker at rest
    flow = ezflow.Flow(range(24)).map(leak_50mb, workers=2, start_method=start_method, max_memory=limit)
    assert flow.collect(progress=False) == [x * 2 for x in range(24)]
    s = flow.stats["leak_50mb"]
    # 24 x 50 MB over 2 workers is 600 MB each without recycling: they were replaced
    assert s.workers_recycled >= 2, s
    assert s.memory_failures == 0 and s.errors == 0
    assert 0 < s.peak_worker_rss <= limit + 2 * LEAK, s


def leak_then_wait(x):
    _leaked.append(b"\x01" * LEAK)
    time.sleep(0.25)  # the sampler sees the worker over the limit while this item runs
    return x


def test_a_worker_stopped_mid_item_by_its_own_leak_does_not_fail_the_item():
    # the item that crosses the limit on a worker that ran others first runs again on a fresh
    # worker, where it fits: the leak is to blame, not the item
    limit = _rest_rss() + 120 * MB
    flow = ezflow.Flow(range(8)).map(leak_then_wait, workers=2, chunksize=1, start_method="fork", max_memory=limit)
    assert flow.collect(progress=False) == list(range(8))
    s = flow.stats[0]
    assert s.memory_failures == 0 and s.workers_recycled >= 2, s


@pytest.mark.parametrize("start_method", METHODS)
def test_an_item_that_allocates_past_the_limit_fails_alone(start_method):
    limit = _rest_rss(start_method) + 150 * MB
    flow = ezflow.Flow(range(8)).map(
        _Hog(limit + 200 * MB), workers=2, start_method=start_method, max_memory=limit, errors="return",
        name="hog",
    )
    got = flow.collect(progress=False)
    assert [g for i, g in enumerate(got) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
    f = got[3]
    assert isinstance(f, ezflow.Failure), got
    err = f.error
    assert isinstance(err, ezflow.MemoryLimitExceeded) and isinstance(err, MemoryError)
    assert err.stage == "hog" and err.index == 3 and err.peak_rss > limit and err.limit == limit
    assert "item 3" in str(err) and "'hog'" in str(err) and "max_memory" in str(err)
    s = flow.stats["hog"]
    assert s.memory_failures == 1 and s.errors == 1 and s.workers_recycled >= 1
    assert s.peak_worker_rss > limit


class _Hog:
    def __init__(self, extra: int):
        self.extra = extra

    def __call__(self, x):
        return hog_on_three(x, self.extra)


def test_a_piece_of_many_items_is_split_and_only_the_hog_fails():
    limit = _rest_rss() + 150 * MB
    got = ezflow.map(
        _Hog(limit + 200 * MB), range(12), workers=2, chunksize=4, start_method="fork", max_memory=limit,
        errors="return", progress=False,
    )
    assert [g for i, g in enumerate(got) if i != 3] == [x for x in range(12) if x != 3]
    assert isinstance(got[3].error, ezflow.MemoryLimitExceeded) and got[3].index == 3


class BigModel:
    def __init__(self):
        self.weights = b"\x01" * (120 * MB)

    def __call__(self, x):
        return x


def test_a_class_that_alone_passes_the_limit_fails_the_start():
    limit = _rest_rss() + 60 * MB
    with pytest.raises(ezflow.StageError, match="once it has built the stage's class"):
        ezflow.map(BigModel, range(3), workers=1, start_method="fork", max_memory=limit, progress=False)


@pytest.mark.parametrize(("retry_on", "attempts"), [(MemoryError, 2), (ValueError, 1)])
def test_retry_on_decides_whether_an_item_past_the_limit_is_tried_again(retry_on, attempts):
    limit = _rest_rss() + 150 * MB
    got = ezflow.map(
        _Hog(limit + 200 * MB), range(5), workers=2, start_method="fork", max_memory=limit, errors="return",
        retries=1, retry_on=retry_on, progress=False,
    )
    assert isinstance(got[3].error, ezflow.MemoryLimitExceeded) and got[3].attempts == attempts
    assert [g for i, g in enumerate(got) if i != 3] == [0, 1, 2, 4]


def test_memory_limit_raises_task_error_naming_the_item():
    limit = _rest_rss() + 150 * MB
    with pytest.raises(ezflow.TaskError, match=r"failed on item 3 .*MemoryLimitExceeded") as info:
        ezflow.map(_Hog(limit + 200 * MB), range(6), workers=2, start_method="fork", max_memory=limit, progress=False)
    assert isinstance(info.value.__cause__, ezflow.MemoryLimitExceeded)


def test_memory_limit_error_pickles():
    import pickle

    err = ezflow.MemoryLimitExceeded("s", 3, "3", 600 * MB, 500 * MB)
    back = pickle.loads(pickle.dumps(err))
    assert (back.stage, back.index, back.peak_rss, back.limit, str(back)) == ("s", 3, 600 * MB, 500 * MB, str(err))


def test_a_limit_below_a_fresh_workers_memory_fails_the_stage_with_the_reason():
    # a forked worker starts with this process's pages in its RSS
    assert psutil.Process().memory_info().rss > 20 * 2**20
    with pytest.raises(ezflow.StageError, match="below what a fresh worker process already uses.*spawn"):
        ezflow.map(abs, range(3), workers=1, start_method="fork", max_memory=16 * 2**20, progress=False)


def test_a_sigkilled_worker_says_its_last_rss_and_the_machines_memory():
    got = ezflow.map(die_by_sigkill, range(3), workers=1, errors="return", progress=False)
    err = got[1].error
    assert isinstance(err, ezflow.WorkerDied)
    assert "SIGKILL" in str(err) and "last measured resident memory was" in str(err) and "available" in str(err)


def test_the_proc_meter_reads_the_figures_psutil_reads():
    import subprocess
    import sys

    from ezflow._executors.meter import ProcMeter as _ProcMeter
    from ezflow._executors.meter import PsutilMeter as _PsutilMeter
    from ezflow._executors.meter import memory_meter as _meter

    proc, ps = _ProcMeter(), _PsutilMeter(psutil)
    assert isinstance(_meter(), _ProcMeter)  # Linux: no psutil import on a plain map
    pid = os.getpid()
    # read one after the other: this process (and the machine) may move a little in between
    assert abs(proc.rss(proc.handle(pid)) - ps.rss(ps.handle(pid))) <= 16 * 2**20
    assert abs(proc.available() - ps.available()) <= 0.25 * ps.available()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its /proc entry is gone
    for meter in (proc, ps):
        with pytest.raises(OSError):
            meter.rss(meter.handle(child.pid))


@pytest.mark.cold_pools  # the meter's handle of each worker is made when the worker starts
def test_without_procs_figures_psutil_measures_the_workers(monkeypatch):
    from ezflow._executors import meter

    def no_meminfo(self):
        raise ValueError("no MemAvailable in /proc/meminfo")

    monkeypatch.setattr(meter.ProcMeter, "available", no_meminfo)
    assert isinstance(meter.memory_meter(), meter.PsutilMeter)
    got = ezflow.map(die_by_sigkill, range(3), workers=1, errors="return", progress=False)
    err = got[1].error
    assert "last measured resident memory was" in str(err) and "available" in str(err)


# -- max_tasks_per_worker ------------------------------------------------------------


@pytest.mark.cold_pools  # workers inherit the environment when they start
@pytest.mark.parametrize("start_method", METHODS)
def test_one_task_per_worker_with_a_class_stage_builds_and_closes_each(tmp_path, monkeypatch, start_method):
    log = tmp_path / "life.txt"
    monkeypatch.setenv("EZFLOW_TEST_LIFE_LOG", str(log))  # workers start after this: they inherit it
    flow = ezflow.Flow(range(6)).map(Counted, workers=2, start_method=start_method, max_tasks_per_worker=1)
    got = flow.collect(progress=False)
    assert [x for x, _ in got] == list(range(6))
    pids = [pid for _, pid in got]
    assert len(set(pids)) == 6  # a new process for every item
    lines = log.read_text().split()
    inits = Counter(lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == "init")
    closes = Counter(lines[i + 1] for i in range(0, len(lines), 2) if lines[i] == "close")
    s = flow.stats[0]
    assert s.workers_recycled == 6
    # the 2 first workers and the 6 that replaced them each built one instance and closed it
    assert inits == closes and sum(inits.values()) == 8 and set(inits.values()) == {1}
    assert {str(p) for p in pids} <= set(closes)


class CloseFails:
    def __call__(self, x):
        return x

    def close(self):
        raise OSError("disk full while saving the cache")


def test_a_recycled_workers_close_error_is_reported_after_the_results():
    flow = ezflow.Flow(range(4)).map(CloseFails, workers=1, start_method="fork", max_tasks_per_worker=2)
    with pytest.raises(ezflow.StageError, match=r"close\(\) raised OSError: disk full"):
        flow.collect(progress=False)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    n=st.integers(0, 40),
    chunksize=st.one_of(st.none(), st.integers(1, 7)),
    max_tasks=st.integers(1, 6),
    workers=st.integers(1, 2),
)
def test_no_item_is_lost_or_repeated_and_no_worker_runs_past_its_tasks(
    tmp_path_factory, n, chunksize, max_tasks, workers
):
    path = tmp_path_factory.mktemp("calls") / "calls.txt"
    path.touch()
    got = ezflow.map(
        CallLog(str(path)), range(n), workers=workers, chunksize=chunksize, max_tasks_per_worker=max_tasks,
        start_method="fork", progress=False,
    )
    assert got == list(range(n))
    calls = [line.split() for line in path.read_text().splitlines()]
    assert sorted(int(x) for x, _ in calls) == list(range(n))  # each item ran exactly once
    per_pid = Counter(pid for _, pid in calls)
    assert all(c <= max_tasks for c in per_pid.values()), per_pid


def test_warm_workers_count_items_across_calls():
    first = ezflow.map(pid_of, range(6), workers=1, max_tasks_per_worker=4, progress=False)
    second = ezflow.map(pid_of, range(6), workers=1, max_tasks_per_worker=4, progress=False)
    per_pid = Counter(pid for _, pid in first + second)
    assert all(c <= 4 for c in per_pid.values()), per_pid


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GB", 2 * 10**9), ("500MB", 500 * 10**6), ("1.5GiB", int(1.5 * 2**30)), ("64 MiB", 64 * 2**20),
     ("3g", 3 * 10**9), (10**9, 10**9)],
)
def test_memory_sizes(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize(
    ("opts", "error", "match"),
    [
        ({"max_memory": "2 gigs"}, ValueError, "is not a size"),
        ({"max_memory": 2.5e9}, TypeError, "size in bytes"),
        ({"max_memory": "2"}, ValueError, "at least 16 MiB"),
        ({"max_memory": True}, TypeError, "max_memory"),
        ({"max_tasks_per_worker": 0}, ValueError, ">= 1"),
        ({"max_tasks_per_worker": 2.0}, TypeError, "int"),
        ({"max_tasks_per_worker": 5, "mode": "thread"}, ValueError, "not supported on mode='thread'; threads share"),
        ({"max_memory": "1GB", "mode": "thread"}, ValueError, "max_memory= is not supported on mode='thread'"),
        ({"max_memory": "1GB", "mode": "async"}, ValueError, "not supported on mode='async'; async tasks share"),
        ({"max_tasks_per_worker": 5, "backend": "dask"}, ValueError, "dask stage.*--lifetime"),
        ({"max_memory": "1GB", "backend": "dask"}, ValueError, "dask stage.*memory_limit"),
    ],
)
def test_bad_lifespan_options_fail_when_the_stage_is_built(opts, error, match):
    with pytest.raises(error, match=match):
        ezflow.Flow(range(3)).map(abs, **opts)


def test_options_reach_the_plan_from_map_and_imap():
    spec = ezflow.Flow([1]).map(abs, max_tasks_per_worker=3, max_memory="1GiB").stages[0]
    assert (spec.max_tasks_per_worker, spec.max_memory) == (3, 2**30)
    assert ezflow.map(abs, [-1, -2], max_tasks_per_worker=1, workers=1, progress=False) == [1, 2]
    assert list(ezflow.imap(abs, [-1, -2], max_memory="4GB", workers=1, progress=False)) == [1, 2]
