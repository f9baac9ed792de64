"""The lock order is enforced in code: a lock taken while holding one that comes after it raises (in tests).

    ordered_lock(name, level)  the suite runs with EZFLOW_CHECK_LOCKS=1 (conftest.py):
                               every lock of a process stage is an OrderedLock
    hold level 90, take 10  -> AssertionError naming both locks; nothing is taken
"""

from __future__ import annotations

import threading

import pytest

from ezflow._core import locks
from ezflow._core.locks import OrderedLock, ordered_lock
from ezflow._executors import lockorder, recycle
from ezflow._executors.backlog import Backlogs
from ezflow._executors.process import ProcessExecutor
from ezflow._plan.spec import make_stage


def test_locks_taken_in_order_pass_and_the_wrong_order_raises():
    first, last = OrderedLock("first", 10), OrderedLock("last", 20)
    with first, last:
        pass
    with last:
        with pytest.raises(AssertionError, match=r"lock order: 'first' \(level 10\) taken while holding 'last'"):
            first.acquire()
        assert not first.locked()  # the check comes before the wait: nothing was taken
    with first:  # once `last` is released the order starts over
        pass
    with first, pytest.raises(AssertionError):
        first.acquire()  # the same level again: a lock is never taken twice by one thread


def test_the_order_is_per_thread():
    first, last = OrderedLock("first", 10), OrderedLock("last", 20)
    took = []
    with last:
        t = threading.Thread(target=lambda: took.append(first.acquire(timeout=5) and first.release() is None))
        t.start()
        t.join(10)
    assert took == [True]


def test_the_suite_checks_the_process_stage_locks():
    assert locks.CHECK
    assert isinstance(ordered_lock("x", 1), OrderedLock)
    assert isinstance(Backlogs("s")._lock, OrderedLock)
    assert isinstance(recycle._lives_lock, OrderedLock)
    assert lockorder.EXECUTOR < lockorder.BACKLOGS < lockorder.SEND < lockorder.LIVES


class _NoEngine:
    """An executor never set up talks to no engine: its port is only kept."""

    def report_workers(self, **counts: int) -> None:
        raise AssertionError("not set up: nothing to report")


def test_the_process_executor_lock_comes_before_the_lifespan_records():
    ex = ProcessExecutor(make_stage("map", abs, mode="process", workers=1), _NoEngine())  # type: ignore[arg-type]
    try:
        assert isinstance(ex._lock, OrderedLock)
        with ex._lock, recycle._lives_lock:  # the executor's own order: fine
            pass
        with recycle._lives_lock:
            with pytest.raises(AssertionError, match="'process executor'"):
                ex._lock.acquire()
        assert not ex._lock.locked()
    finally:
        ex._close_wake()
