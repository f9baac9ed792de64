"""Per-item rules mean the same in every mode (issue 10 point 3, issue 15 point 6).

Retries count every try, wherever it failed: an error the function raised,
a timeout, a worker that died. `retry_on` decides, the same way everywhere.
Options are checked when the stage is built, against one table.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

import pytest

import ezflow
from ezflow._executors.rules import ItemRules
from ezflow._plan.options import SUPPORT, support_table

pytestmark = pytest.mark.timeout(90)


def _marker(tmp_path, x):
    return os.path.join(str(tmp_path), f"tried-{x}")


def _first_try(path):
    """True on the first call for this path (across processes)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


class SlowOnceOn2:
    """Item 2 overruns the timeout on its first try only."""

    def __init__(self, where):
        self.where = where

    def __call__(self, x):
        if x == 2 and _first_try(os.path.join(self.where, "slow")):
            time.sleep(30)
        return x


class DiesOnceOn2:
    """Item 2 kills its worker process on its first try only."""

    def __init__(self, where):
        self.where = where

    def __call__(self, x):
        if x == 2 and _first_try(os.path.join(self.where, "die")):
            os._exit(3)
        return x


class AlwaysDiesOn2:
    def __call__(self, x):
        if x == 2:
            os._exit(3)
        return x


@pytest.mark.no_dask("dask stages take no item_timeout")
def test_timed_out_item_is_retried_in_every_mode(mode, tmp_path):
    fn = SlowOnceOn2(str(tmp_path))
    flow = ezflow.Flow(range(5)).map(mode.fn(fn), name="slow", item_timeout=1.0, retries=1, **mode)
    assert flow.collect(progress=False) == [0, 1, 2, 3, 4]
    assert flow.stats.stages[0].retries == 1


@pytest.mark.no_dask("dask stages take no item_timeout")
def test_timed_out_item_is_not_retried_when_retry_on_excludes_it(mode, tmp_path):
    fn = SlowOnceOn2(str(tmp_path))
    got = ezflow.map(mode.fn(fn), range(4), item_timeout=1.0, retries=2, retry_on=ValueError, errors="return", progress=False, **mode)
    assert isinstance(got[2], ezflow.Failure) and isinstance(got[2].error, ezflow.ItemTimeout)
    assert got[2].attempts == 1


def test_async_timed_out_item_is_retried(tmp_path):
    tries = []

    async def slow_once(x):
        tries.append(x)
        await asyncio.sleep(5 if tries.count(x) == 1 and x == 2 else 0)
        return x

    got = ezflow.map(slow_once, range(4), item_timeout=0.3, retries=1, progress=False)
    assert got == [0, 1, 2, 3] and tries.count(2) == 2
    tries.clear()
    got = ezflow.map(slow_once, range(4), item_timeout=0.3, retries=0, errors="return", progress=False)
    assert isinstance(got[2].error, ezflow.ItemTimeout) and got[2].attempts == 1


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_worker_death_is_retried_like_any_error(start_method, tmp_path):
    fn = DiesOnceOn2(str(tmp_path))
    # chunksize=1: a piece of several items whose worker died is first re-run item by
    # item to find the culprit, which is not a retry (nothing says which item killed)
    flow = ezflow.Flow(range(5)).map(fn, name="dies", workers=2, retries=1, chunksize=1, start_method=start_method)
    assert flow.collect(progress=False) == [0, 1, 2, 3, 4]
    assert flow.stats.stages[0].retries == 1


def test_worker_death_retries_are_bounded_and_counted():
    got = ezflow.map(AlwaysDiesOn2(), range(4), workers=2, retries=2, errors="return", progress=False)
    f = got[2]
    assert isinstance(f.error, ezflow.WorkerDied) and f.attempts == 3
    assert [g for i, g in enumerate(got) if i != 2] == [0, 1, 3]
    got = ezflow.map(
        AlwaysDiesOn2(), range(4), workers=2, retries=2, retry_on=ValueError, errors="return", progress=False
    )
    assert got[2].attempts == 1


def test_rules_decide_once():
    rules = ItemRules(retries=2, retry_on=(OSError,), backoff=0.5)
    assert rules.should_retry(OSError(), 1) == 0.5
    assert rules.should_retry(OSError(), 2) == 1.0
    assert rules.should_retry(OSError(), 3) is None  # tries used up
    assert rules.should_retry(ValueError(), 1) is None  # not in retry_on
    assert ItemRules(retries=10_000, backoff=1.0).should_retry(ValueError(), 9_999) == 1_000_000.0  # capped


# -- validation at build time -----------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "rule"),
    [
        ("item_timeout", float("nan"), "item_timeout must be a number of seconds > 0, got NaN"),
        ("item_timeout", -1, "item_timeout must be > 0 seconds"),
        ("item_timeout", 0, "item_timeout must be > 0 seconds"),
        ("item_timeout", 3e6, "item_timeout must be at most 1e\\+06 seconds"),
        ("rate", float("nan"), "rate must be a number of calls per second"),
        ("rate", -2, "rate must be >= 1e-06 calls per second"),
        ("rate", 1e-9, "rate must be >= 1e-06 calls per second"),
        ("backoff", float("nan"), "backoff must be a number of seconds >= 0, got NaN"),
        ("backoff", -0.1, "backoff must be >= 0 seconds"),
        ("backoff", float("inf"), "backoff must be finite"),
        ("backoff", 1e7, "backoff must be at most"),
    ],
)
def test_nonsense_numbers_fail_at_build_time_with_the_rule(option, value, rule):
    with pytest.raises(ValueError, match=rule):
        ezflow.Flow(range(3)).map(abs, **{option: value})


def test_wrong_types_fail_at_build_time():
    for option in ("item_timeout", "rate", "backoff"):
        with pytest.raises(TypeError, match=option):
            ezflow.Flow(range(3)).map(abs, **{option: "1"})
        with pytest.raises(TypeError, match=option):
            ezflow.Flow(range(3)).map(abs, **{option: True})
    with pytest.raises(ValueError, match="batch timeout must be a number of seconds > 0, got NaN"):
        ezflow.Flow(range(3)).batch(2, timeout=math.nan)


def test_infinite_timeout_and_rate_mean_none():
    flow = ezflow.Flow(range(3)).map(abs, item_timeout=float("inf"), rate=float("inf"), mode="thread")
    assert flow.stages[0].item_timeout is None and flow.stages[0].rate is None
    assert flow.collect(progress=False) == [0, 1, 2]
    assert ezflow.Flow(range(3)).batch(2, timeout=float("inf")).collect(progress=False) == [[0, 1], [2]]


@pytest.mark.no_dask("dask stages take no item_timeout")
def test_large_finite_timeout_runs(mode):
    got = ezflow.map(mode.fn(abs), range(-3, 3), item_timeout=1e6, progress=False, **mode)
    assert got == list(map(abs, range(-3, 3)))


# -- the option table --------------------------------------------------------


async def _coro(x):
    return x


@pytest.mark.parametrize(
    ("opts", "option"),
    [({"item_timeout": 1}, "item_timeout="), ({"rate": 5}, "rate="), ({}, "a coroutine function")],
)
def test_dask_stage_refuses_unsupported_options_when_built(opts, option):
    fn = _coro if not opts else abs
    # no client is needed: the table is checked at .map(), before anything connects
    with pytest.raises(ValueError, match=f"{option} is not supported on a dask stage") as info:
        ezflow.Flow(range(3)).map(fn, backend="tcp://127.0.0.1:1", **opts)
    assert "run the stage locally" in str(info.value) or "without backend=" in str(info.value)


def test_coroutine_in_process_mode_names_the_fix():
    with pytest.raises(ValueError, match="coroutine function is not supported on mode='process'; use mode='async'"):
        ezflow.Flow(range(3)).map(_coro, mode="process")


def test_option_table_prints_for_the_readme():
    table = support_table()
    assert table.startswith("| option | thread | process | async | dask |")
    assert all(option in table for option in SUPPORT)


# -- rate and backoff: one implementation, driven by each runner -------------


def test_async_rate_is_paced_without_blocking_the_loop():
    async def stamp(_):
        return time.monotonic()

    stamps = ezflow.map(stamp, range(11), rate=20, workers=4, progress=False)
    assert stamps[-1] - stamps[0] >= 0.45  # 10 gaps at 20 calls per second


class FailsTwice:
    def __init__(self):
        self.calls = {}

    def __call__(self, x):
        self.calls[x] = self.calls.get(x, 0) + 1
        if self.calls[x] <= 2:
            raise OSError("flaky")
        return x


def test_backoff_waits_between_tries_in_every_mode(mode):
    t0 = time.monotonic()
    flow = ezflow.Flow([5]).map(mode.fn(FailsTwice), workers=1, retries=2, backoff=0.2, retry_on=OSError, **mode)
    assert flow.collect(progress=False) == [5]
    assert time.monotonic() - t0 >= 0.6  # 0.2 then 0.4
    assert flow.stats.stages[0].retries == 2
