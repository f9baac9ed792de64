"""Workers that follow a flow's CPU budget: a process stage runs `active` workers of its pool.

    budget thread --resize(n)------> active = n; past the pool's size: start workers now
    sender thread --candidates()---> pool.workers[:active]: only these are sent pieces
    budget thread --cpu_seconds()--> user + system CPU time the stage's workers used (/proc)

With fewer workers the others finish what they hold and wait, parked and
warm: moving a worker back later costs nothing, and the stage's teardown
reaches every one. Workers keep their places in the pool's list (a dead or
recycled one is replaced where it stood), so "the first `active`" is a
stable set. A stage whose `workers` the user chose has `active` None: all of
its workers run, and no budget touches it.
"""

from __future__ import annotations

import threading
from typing import Any

from .meter import proc_cpu_seconds
from .pool import ProcessPool, WorkerProc, stop_worker

__all__ = ["Elastic"]


class Elastic:
    """The part of a process executor that lets a CPU budget set how many of its workers run."""

    pool: ProcessPool | None
    spec: Any
    _lock: threading.Lock
    _tally: Any

    def __init__(self) -> None:
        self.active: int | None = None  # None: every worker of the pool runs (workers= chosen by the user)
        self._cpu_last: dict[int, float] = {}  # pid -> CPU seconds at the last look
        self._cpu_used = 0.0

    def candidates(self, pool: ProcessPool) -> list[WorkerProc]:
        """Return the workers that may be sent new pieces now."""
        return pool.workers if self.active is None else pool.workers[: self.active]

    def resize(self, workers: int) -> None:
        """Run `workers` of the pool's workers from now on; start more if the pool has fewer."""
        n = max(1, min(int(workers), self.spec.workers))
        with self._lock:
            self.active = n
            pool = self.pool
            if pool is None or self.cancelled or self.closing:
                return  # setup() starts the pool at this size
            missing = n - len(pool.workers)
        # started outside the lock: a spawned worker takes ~0.1 s to start, and the
        # sender and collector must not wait for it
        fresh = [pool.spawn() for _ in range(max(0, missing))]
        with self._lock:
            late = self.cancelled or self.closing or self.pool is not pool
            for w in fresh if not late else ():
                pool.workers.append(w)
                pool.size = len(pool.workers)
                self._send_setup(w)  # before the sender can see it: its first message must be the setup
                self._tally.up(w, fresh=True)
        if late:
            for w in fresh:
                stop_worker(w, timeout=0.0)  # the stage ended meanwhile: these never joined it
            return
        self._wake()  # the collector waits on the pipes it knew: it must list the new ones
        self.port.wake()  # the sender may have room now

    def cpu_seconds(self) -> float | None:
        """Return the CPU seconds this stage's workers used since the stage first looked at each."""
        pool = self.pool
        if pool is None:
            return None
        with self._lock:
            pids = [w.proc.pid for w in pool.workers]
        seen: dict[int, float] = {}  # only the workers there now: a recycled one's pid is not kept
        for pid in pids:
            now = proc_cpu_seconds(pid)
            if now is None:
                continue
            last = self._cpu_last.get(pid)
            seen[pid] = now
            if last is not None:
                self._cpu_used += max(0.0, now - last)
        self._cpu_last = seen
        return self._cpu_used if seen else None

    # provided by the executor
    cancelled: bool
    closing: bool
    port: Any

    def _send_setup(self, w: WorkerProc) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError
