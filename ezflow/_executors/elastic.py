"""Workers that follow a flow's CPU budget: a process stage runs `active` workers of its pool.

    budget thread --resize(n)------> active = n; past the pool's size: start workers now
    sender thread --candidates()---> pool.workers[:active]: only these are sent pieces
    budget thread --sched_seconds()-> CPU time the stage's workers used, and time they waited for a core (/proc)

With fewer workers the others finish what they hold and wait, parked and
warm: moving a worker back later costs nothing, and the stage's teardown
reaches every one. Workers keep their places in the pool's list (a dead or
recycled one is replaced where it stood), so "the first `active`" is a
stable set. A stage whose `workers` the user chose has `active` None: all of
its workers run, and no budget touches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._transport.serialize import dumps
from .meter import proc_cpu_seconds, proc_sched_seconds
from .pool import ProcessPool, WorkerProc, stop_worker
from .wire import Exit, encode

if TYPE_CHECKING:
    from .host import Host

__all__ = ["ElasticSizing"]


class ElasticSizing:
    """A process executor's policy that lets a CPU budget set how many of its workers run."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.active: int | None = None  # None: every worker of the pool runs (workers= chosen by the user)
        self._sched_last: dict[int, tuple[float, float | None]] = {}  # pid -> (CPU, core wait) at the last look
        self._sched_used: tuple[float, float | None] = (0.0, 0.0)

    def candidates(self, pool: ProcessPool) -> list[WorkerProc]:
        """Return the workers that may be sent new pieces now."""
        return pool.workers if self.active is None else pool.workers[: self.active]

    def resize(self, workers: int) -> None:
        """Run `workers` of the pool's workers from now on; start more if the pool has fewer.

        The budget may go past `spec.workers` (a stage that waits on I/O): the pool grows.
        """
        host = self.host
        n = max(1, int(workers))
        with host._lock:
            self.active = n
            pool = host.pool
            if pool is None or host.cancelled or host.closing:
                return  # setup() starts the pool at this size
            missing = n - len(pool.workers)
        # started outside the lock: a spawned worker takes ~0.1 s to start, and the
        # sender and collector must not wait for it
        fresh = [pool.spawn() for _ in range(max(0, missing))]
        with host._lock:
            late = host.cancelled or host.closing or host.pool is not pool
            for w in fresh if not late else ():
                pool.workers.append(w)
                pool.size = len(pool.workers)
                host._send_setup(w)  # before the sender can see it: its first message must be the setup
                host._tally.up(w, fresh=True)
        if late:
            for w in fresh:
                stop_worker(w, timeout=0.0)  # the stage ended meanwhile: these never joined it
            return
        host._wake()  # the collector waits on the pipes it knew: it must list the new ones
        host.port.wake()  # the sender may have room now

    def shed_growth(self, pool: ProcessPool) -> None:
        """Stop the workers the budget added past `spec.workers` (a stage that waited on I/O) before the pool goes back.

        A warm pool keeps the size a stage starts with: the next run grows it
        again if it waits too, and idle extra processes hold no memory meanwhile.
        """
        if self.active is None:
            return
        workers = self.host.spec.workers
        with self.host._lock:
            extra = pool.workers[workers:]
            del pool.workers[workers:]
            pool.size = len(pool.workers)
        bye = dumps(encode(Exit()))
        for w in extra:  # all told first: they exit side by side, and the joins below are short
            try:
                with w.send_lock:
                    w.conn.send_bytes(bye)
            except OSError:
                pass
        for w in extra:
            stop_worker(w, timeout=1.0)

    def sched_seconds(self) -> tuple[float, float | None] | None:
        """Return the CPU seconds this stage's workers used, and the seconds they waited for a core.

        Counted since the stage first looked at each worker; the wait is None
        where /proc/<pid>/schedstat is missing (CPU from /proc/<pid>/stat then).
        None: nothing measured (no pool yet, or no /proc).
        """
        pool = self.host.pool
        if pool is None:
            return None
        with self.host._lock:
            pids = [w.proc.pid for w in pool.workers]
        seen: dict[int, tuple[float, float | None]] = {}  # only the workers there now: a recycled one's pid is not kept
        cpu, wait = self._sched_used
        for pid in pids:
            now: tuple[float, float | None] | None = proc_sched_seconds(pid)
            if now is None:
                ran = proc_cpu_seconds(pid)
                if ran is None:
                    continue
                now = (ran, None)
            last = self._sched_last.get(pid)
            seen[pid] = now
            if last is not None:
                cpu += max(0.0, now[0] - last[0])
                if wait is not None and now[1] is not None and last[1] is not None:
                    wait += max(0.0, now[1] - last[1])
                else:
                    wait = None  # one worker without the figure: the stage's wait is unknown
        self._sched_last = seen
        self._sched_used = (cpu, wait)
        return self._sched_used if seen else None
