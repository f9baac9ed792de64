"""Shared fixtures: every test is checked for leaked processes and /dev/shm entries.

Warm worker pools are kept between tests, as between a user's calls: most of
the suite would otherwise start every pool cold. So a "leak" between tests
is a child process beyond the idle warm pools' own workers, or a /dev/shm
entry of this process or its children once the shared memory kept for reuse
is freed (`flush_kept`, not `shutdown`). At the end of each test module the
pools are stopped too, and then nothing at all may be left. A test of
start-up or shutdown says ``@pytest.mark.cold_pools``: it starts from no pool
(``EZFLOW_TEST_COLD_POOLS=1`` starts every test so, as the suite once ran).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

# before ezflow is imported: its locks check the lock order they are taken in (`_core.locks`)
os.environ.setdefault("EZFLOW_CHECK_LOCKS", "1")

import ezflow  # noqa: E402
from ezflow._executors import pool as _pool
from ezflow._transport import flush_kept

SHM = "/dev/shm"
# multiprocessing's own long-lived helpers, started once per interpreter
_HELPERS = ("forkserver", "resource_tracker", "semaphore_tracker")


# Processes and semaphores of the session's shared dask cluster (the "dask" mode): not leaks.
_KNOWN: set[int] = set()
_KNOWN_SHM: set[str] = set()


def _children() -> set[int]:
    out = set()
    for p in psutil.Process().children(recursive=True):
        if p.pid in _KNOWN:
            continue
        try:
            cmd = " ".join(p.cmdline())
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue  # it ended while we looked (a watcher saying goodbye)
        if any(h in cmd for h in _HELPERS):
            continue
        out.add(p.pid)
    return out


# /dev/shm is shared by the whole machine: another ezflow process, another test
# run or a notebook server may be making and freeing segments right now. A test
# therefore checks only what its own processes made: ezflow's names carry the
# owner's pid (ezf_<owner>_<creator>_<n>_<pid namespace>), so a leak is a new ezf_ name whose
# owner or creator is this process or one of its children.
# multiprocessing's own names (psm_*, sem.mp-*) say nothing of their owner and
# ezflow does not make them: they are not counted.
def _mine(name: str, pids: set[int]) -> bool:
    parts = name[len("ezf_") :].split("_")
    if len(parts) == 3 and parts[2] == "live" and parts[0].isdigit():
        return int(parts[0]) in pids  # an owner's liveness lock: freed with its last segment
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        return False
    return int(parts[0]) in pids or int(parts[1]) in pids


def _shm(pids: set[int] | None = None) -> set[str]:
    try:
        names = {n for n in os.listdir(SHM) if n.startswith("ezf_")}
    except FileNotFoundError:
        return set()
    if pids is None:
        return names
    return {n for n in names if _mine(n, pids)}


def _warm_workers() -> set[int]:
    """The pids of the idle warm pools' workers: kept between tests on purpose."""
    with _pool._lock:
        pools = list(_pool._idle.values())
    return {w.proc.pid for p in pools for w in p.workers}


def _check_left(before_children: set[int], before_shm: set[str], pids: set[int], allowed: Callable[[], set[int]]) -> None:
    deadline = time.monotonic() + 5
    while True:
        left = _children() - before_children - allowed()
        shm = _shm(pids) - before_shm - _KNOWN_SHM
        if not left and not shm:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    details = []
    for pid in left:
        try:
            details.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())}")
        except psutil.Error:
            details.append(str(pid))
    pytest.fail(f"test left behind processes {details} and /dev/shm entries {sorted(shm)}")


@pytest.fixture(autouse=True, scope="module")
def no_leaks_in_module():
    """At the end of a test module stop the warm pools too: then nothing of the module's may be left."""
    before_children = _children()
    before_shm = _shm()
    yield
    pids = {os.getpid()} | _children() | before_children
    ezflow.shutdown()
    _check_left(before_children, before_shm, pids, set)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest, no_leaks_in_module: None):
    """Fail a test that leaves a child process (beyond the idle warm pools) or a /dev/shm entry behind."""
    if request.node.get_closest_marker("cold_pools") is not None or os.environ.get("EZFLOW_TEST_COLD_POOLS"):
        ezflow.shutdown()  # it tests start-up: from no pool (EZFLOW_TEST_COLD_POOLS=1: every test, to compare)
    warm = _warm_workers()
    before_children = _children()
    before_shm = _shm()
    yield
    pids = {os.getpid()} | _children() | before_children
    flush_kept()  # the shared memory kept for reuse (the warm pools stay)
    # a warm worker the test took must be warm again (or gone): a pool it never gave back is a leak
    _check_left(before_children - warm, before_shm, pids, _warm_workers)


START_METHODS = ["fork", "spawn", "forkserver"]
MODES = [
    pytest.param({"mode": "thread"}, id="thread"),
    *[pytest.param({"mode": "process", "start_method": m}, id=f"process-{m}") for m in START_METHODS],
    pytest.param({"mode": "async"}, id="async"),
    pytest.param({"backend": "dask"}, id="dask"),
]


class Mode(dict):
    """Stage options of one mode (``**mode``), and `fn` to shape a plain test function for it."""

    @property
    def kind(self) -> str:
        """Return the backend this mode runs on, as `_executors._BACKENDS` names it."""
        return "dask" if "backend" in self else str(self["mode"])

    def fn(self, f: Any) -> Any:
        """Return `f` as this mode runs it: async stages take coroutine functions, the others `f` itself."""
        return as_coroutine(f) if self.kind == "async" else f


def as_coroutine(f: Any) -> Any:
    """Return an async version of a plain function or class stage; its body runs in a thread.

    A thread, not the event loop: a test function that sleeps or blocks
    must not stall the stage's loop (a real async stage would await). The
    coroutine keeps the name, so stage names and messages stay the same.
    """
    if isinstance(f, type):
        if inspect.iscoroutinefunction(f.__call__):
            return f
        call: Callable[..., Any] = f.__call__

        async def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(call, self, *args, **kwargs)

        return type(f.__name__, (f,), {"__call__": __call__, "__qualname__": f.__qualname__})
    if inspect.iscoroutinefunction(f):
        return f

    @functools.wraps(f)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(f, *args, **kwargs)

    return run


_dask: dict = {}


def _dask_client() -> object:
    """One LocalCluster (2 worker processes on 127.0.0.1) for the whole session, started on first use."""
    if "client" not in _dask:
        distributed = pytest.importorskip("distributed")
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        )
        _dask["cluster"] = cluster
        _dask["client"] = distributed.Client(cluster, set_as_default=False)
        _KNOWN.update(p.pid for p in psutil.Process().children(recursive=True))
        _KNOWN_SHM.update(_shm())
    return _dask["client"]


def pytest_sessionfinish(session: pytest.Session) -> None:
    if "client" in _dask:
        _dask.pop("client").close()
        _dask.pop("cluster").close()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Mode:
    """Stage options for each executor the behavioural suite runs on: ``.map(mode.fn(f), **mode)``.

    "async" runs `f` as a coroutine (`Mode.fn`); "dask" runs the stage on a
    real local cluster. A test that does not apply to one backend says so
    with ``@pytest.mark.no_<backend>("reason")`` (no_thread, no_process,
    no_async, no_dask); the reason is shown with the skip.
    """
    opts = Mode(request.param)
    marker = request.node.get_closest_marker(f"no_{opts.kind}")
    if marker is not None:
        pytest.skip(f"not for {opts.kind} stages: {marker.args[0] if marker.args else 'see the test'}")
    if opts.kind == "dask":
        opts["backend"] = _dask_client()
    return opts
