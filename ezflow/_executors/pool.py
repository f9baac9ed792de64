"""Warm worker processes, kept between calls and never leaked.

A `ProcessPool` is a set of worker processes (see `_worker`), each with its
own duplex pipe. A run checks a pool out for one stage and gives it back
when the stage ends cleanly; the next call with the same start method and
worker count gets it warm, without paying process start-up again. A pool
whose run was cancelled or failed is discarded: its workers are killed.
Idle pools are stopped at interpreter exit, or by `ezflow.shutdown()`.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any

from .._core import sigterm
from .._core.locks import ordered_lock
from .._core.procs import close_end, start_child
from .._transport import flush_kept
from .deadline import Slot
from .lockorder import SEND
from .wire import Exit, encode
from .worker import worker_main

__all__ = ["ProcessPool", "WorkerProc", "acquire", "release", "shutdown", "stop_worker"]

MAX_IDLE_POOLS = 4
_ids = itertools.count()


class WorkerProc:
    """One worker process and the pieces it holds."""

    __slots__ = ("__weakref__", "born", "conn", "outstanding", "proc", "send_lock", "sent_at", "slot")

    def __init__(self, proc: Any, conn: Connection, slot: Any = None) -> None:
        self.proc = proc
        self.conn = conn
        self.slot = slot  # which item it runs since when (deadline.py): per-item time limits
        # held while a task is written and while the pipe is closed: a descriptor closed
        # under a write could be reused at once by a new worker's pipe, and the write land there
        self.send_lock = ordered_lock("worker send", SEND)
        self.outstanding: collections.deque = collections.deque()
        self.sent_at = 0.0  # when the oldest outstanding piece was sent
        self.born = time.perf_counter()  # when it was started (a stage's insights time its start-up)


class ProcessPool:
    """A fixed number of worker processes started with one start method."""

    def __init__(self, start_method: str, size: int) -> None:
        self.start_method = start_method
        self.size = size
        self.workers: list[WorkerProc] = []
        self.broken = False
        self.terminated = False  # its workers were killed by the SIGTERM clean-up: start no new one
        _live.add(self)
        sigterm.arm()  # a SIGTERM must not leave these workers behind
        try:
            for _ in range(size):
                self.workers.append(self.spawn())
        except BaseException:
            self.kill()
            raise

    @property
    def key(self) -> tuple[str, int]:
        return (self.start_method, self.size)

    def spawn(self) -> WorkerProc:
        """Start one worker process."""
        slot = Slot()
        proc, conn = start_child(
            worker_main,
            start_method=self.start_method,
            name=f"ezflow-worker-{next(_ids)}",
            daemon=False,  # a daemonic worker could not start processes of its own
            args=(slot,),
        )
        return WorkerProc(proc, conn, slot)

    def replace(self, worker: WorkerProc) -> WorkerProc:
        """Reap a dead (or stuck) worker and start a fresh one in its place."""
        _stop_proc(worker, kill=True)
        fresh = self.spawn()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def swap(self, worker: WorkerProc) -> WorkerProc:
        """Start a fresh worker in a live one's place (recycling); stopping the old one is the caller's job."""
        fresh = self.spawn()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def alive(self) -> bool:
        return not self.broken and all(w.proc.is_alive() for w in self.workers)

    def kill(self) -> None:
        """Stop every worker now."""
        self.broken = True
        for w in self.workers:
            try:
                w.proc.kill()
            except Exception:
                pass
        for w in self.workers:
            _stop_proc(w, kill=True)
        _live.discard(self)

    def close(self, timeout: float = 1.0) -> None:
        """Ask every worker to exit; kill those that do not in time."""
        from .._transport.serialize import dumps

        self.broken = True
        msg = dumps(encode(Exit()))
        for w in self.workers:
            try:
                w.conn.send_bytes(msg)
            except Exception:
                pass
        for w in self.workers:
            w.proc.join(timeout)
            _stop_proc(w, kill=True)
        _live.discard(self)


def stop_worker(worker: WorkerProc, timeout: float = 5.0) -> None:
    """Ask one worker (out of its pool) to exit; kill it if it has not within `timeout` seconds."""
    from .._transport.serialize import dumps

    try:
        worker.conn.send_bytes(dumps(encode(Exit())))
    except Exception:
        pass
    worker.proc.join(timeout)
    _stop_proc(worker, kill=True)


def _stop_proc(worker: WorkerProc, kill: bool) -> None:
    proc = worker.proc
    try:
        if proc.is_alive() and kill:
            try:
                proc.kill()
            except OSError:
                pass
        proc.join(5)
    except ValueError:
        return  # already stopped and closed by another thread (a run's end racing the exit clean-up)
    try:
        with worker.send_lock:  # the sender may be writing to it: the process is gone, so that write ends
            close_end(worker.conn)
    except Exception:
        pass
    try:
        proc.close()
    except Exception:
        pass


_lock = threading.Lock()
_idle: collections.OrderedDict[int, ProcessPool] = collections.OrderedDict()
_live: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


def acquire(start_method: str, size: int, up_to: int | None = None, *, fresh: bool = False) -> ProcessPool:
    """Return a warm idle pool of this kind, or start a new one.

    `up_to`: a pool of `size` to `up_to` workers will do (a stage under a CPU
    budget runs some and parks the rest); the smallest warm one is taken.
    `fresh`: start a new one in any case (its workers inherit the caller's memory as it is now).
    """
    if fresh:
        return ProcessPool(start_method, size)
    with _lock:
        fits = [
            (pool.size, pid)
            for pid, pool in _idle.items()
            if pool.start_method == start_method and size <= pool.size <= (up_to or size)
        ]
        for _, pid in sorted(fits):
            pool = _idle.pop(pid)
            if pool.alive():
                return pool
            pool.kill()
    return ProcessPool(start_method, size)


def release(pool: ProcessPool, healthy: bool) -> None:
    """Give a pool back after a run; a pool that is not healthy is killed."""
    if not healthy or not pool.alive():
        pool.kill()
        return
    evict = []
    with _lock:
        _idle[id(pool)] = pool
        while len(_idle) > MAX_IDLE_POOLS:
            evict.append(_idle.popitem(last=False)[1])
    for old in evict:
        old.close()


def shutdown() -> None:
    """Stop every idle warm worker pool now, and free the shared memory kept for reuse.

    Both come back on the next call; nothing needs this at exit.
    """
    with _lock:
        pools = list(_idle.values())
        _idle.clear()
    for pool in pools:
        pool.close()
    flush_kept()  # shared memory kept for reuse, if any was used
    sigterm.disarm()


def _at_exit() -> None:
    with _lock:
        pools = list(_idle.values())
        _idle.clear()
    for pool in pools:
        pool.close(timeout=0.5)
    for pool in list(_live):
        pool.kill()


def _kill_all() -> None:
    # Only signal: the pipes stay open for the run's threads, which must not fail on them
    # while the process ends (or while a user's SIGTERM handler decides what happens next).
    for pool in list(_live):
        pool.broken = pool.terminated = True
        for w in pool.workers:
            try:
                w.proc.kill()
            except Exception:
                pass


atexit.register(_at_exit)
sigterm.register(lambda: bool(_live), _kill_all)
