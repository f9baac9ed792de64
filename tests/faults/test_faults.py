"""Fault injection: whatever kills a worker or an item, every input is accounted for.

After each case the autouse `no_leaks` guard (tests/conftest.py) checks that no
process and no ezf_ segment of ours is left. docs/reliability.md lists every
guarantee with the test that holds it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

import ezflow

START_METHODS = ["fork", "spawn", "forkserver"]


def _die(x: int) -> int:
    if x == 3:
        import faulthandler

        faulthandler.disable()  # a segfault must print nothing
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 7:
        os._exit(3)
    return x * 2


@pytest.mark.parametrize("start_method", START_METHODS)
def test_worker_deaths_fail_only_their_items(start_method: str) -> None:
    out = ezflow.map(_die, range(10), workers=2, start_method=start_method, errors="return", chunksize=1)
    assert len(out) == 10  # every input is a result or a Failure
    failed = {f.index for f in out if isinstance(f, ezflow.Failure)}
    assert failed == {3, 5, 7}
    assert all(isinstance(out[i].error, ezflow.WorkerDied) for i in failed)
    assert [out[i] for i in range(10) if i not in failed] == [i * 2 for i in range(10) if i not in failed]


def _gen_raises() -> Iterator[int]:
    yield from range(5)
    raise ValueError("source broke")


def test_source_error_mid_way_is_raised() -> None:
    with pytest.raises(ValueError, match="source broke"):
        ezflow.map(abs, _gen_raises(), workers=2)


def test_big_results_through_pipes() -> None:
    out = ezflow.map(_big, range(4), workers=2, share_arrays=False)
    assert [len(b) for b in out] == [4 << 20] * 4


def _big(x: int) -> bytes:
    return bytes([x]) * (4 << 20)


class _Unpicklable:
    def __reduce__(self) -> tuple:
        raise TypeError("cannot pickle me")


def _unpicklable_result(x: int) -> object:
    return _Unpicklable() if x == 2 else x


def test_unpicklable_result_fails_its_item_only() -> None:
    out = ezflow.map(_unpicklable_result, range(5), workers=2, errors="return", chunksize=1)
    assert [o for o in out if not isinstance(o, ezflow.Failure)] == [0, 1, 3, 4]
    assert isinstance(out[2], ezflow.Failure)


def test_no_fd_or_thread_growth_over_200_calls() -> None:
    def count() -> tuple[int, int]:
        return len(os.listdir("/proc/self/fd")), threading.active_count()

    ezflow.map(abs, range(4), workers=2)  # warm pool: made once, kept
    before = count()
    for _ in range(200):
        ezflow.map(abs, range(4), workers=2)
    after = count()
    assert after[0] <= before[0] + 2, (before, after)
    assert after[1] <= before[1] + 1, (before, after)


class _LoadFails:
    def __reduce__(self) -> tuple:
        return (_explode, ())


def _explode() -> object:
    import os as _os

    if _os.environ.get("EZFLOW_IN_PARENT") == str(_os.getpid()):
        return _LoadFails.__new__(_LoadFails)
    raise ValueError("cannot load here")


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("chunksize", [1, 3])
def test_item_that_workers_cannot_load_fails_alone(
    monkeypatch: pytest.MonkeyPatch, start_method: str, chunksize: int
) -> None:
    monkeypatch.setenv("EZFLOW_IN_PARENT", str(os.getpid()))
    items = [1, _LoadFails(), 3, 4, 5, 6]
    out = ezflow.map(
        _identity, items, workers=1, errors="return", chunksize=chunksize, start_method=start_method, progress=False
    )
    assert isinstance(out[1], ezflow.Failure)
    assert isinstance(out[1].error, ValueError)  # the real error, its type kept
    assert "cannot load here" in out[1].traceback and "unpickled this item" in out[1].traceback
    assert [out[i] for i in (0, 2, 3, 4, 5)] == [1, 3, 4, 5, 6]
    # the worker lived on: the same warm pool serves the next call
    assert ezflow.map(_identity, [7, 8], workers=1, start_method=start_method, progress=False) == [7, 8]


def test_unloadable_item_with_errors_raise_names_the_item(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EZFLOW_IN_PARENT", str(os.getpid()))
    with pytest.raises(ezflow.TaskError) as info:
        ezflow.map(_identity, [1, _LoadFails(), 3], workers=1, chunksize=3, start_method="fork", progress=False)
    assert info.value.index == 1
    assert isinstance(info.value.__cause__, ValueError)


def _identity(x: object) -> object:
    return x


_SIGTERM_SCRIPT = """
import os, sys, time, numpy as np, ezflow
def slow(a):
    time.sleep(30)
    return a
print("ready", flush=True)
ezflow.map(slow, [np.ones(1 << 20) for _ in range(8)], workers=2, start_method=sys.argv[1])
"""


@pytest.mark.slow
@pytest.mark.parametrize("start_method", START_METHODS)
def test_sigterm_to_a_script_leaves_nothing(start_method: str) -> None:
    pytest.importorskip("numpy")
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SIGTERM_SCRIPT), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    import time

    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGTERM
    time.sleep(1)
    left = [n for n in os.listdir("/dev/shm") if n.startswith(f"ezf_{proc.pid}_")]
    for n in left:
        os.unlink(os.path.join("/dev/shm", n))  # the guard must not blame this test's parent
    assert not left
    assert err == ""
