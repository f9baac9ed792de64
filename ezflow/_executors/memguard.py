"""The memory guard of a process stage (`max_memory`): stop a worker above the limit, and decide whose fault it was.

    sampler thread  watch()            each worker's RSS every GUARD_SECONDS (`Lifespan.watch`);
                                       one above the limit mid-item: SIGKILL (`over_limit`)
    collector       stopped(...)       its death: a piece of several items runs again item by
                                       item; a lone item is blamed if it was the worker's first
                                       or ran on a fresh worker already, else it runs once more,
                                       on a fresh worker
    sender (locked) wants_fresh(p, w)  that item is about to be sent: a used worker is swapped first
    collector       done(piece)        the piece came back: no longer watched

Between pieces the limit is a recycling rule (`recycle.Lifespan.finished`):
a worker above it after a piece is replaced gently, its close() runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .pool import WorkerProc
from .port import Piece
from .recycle import Lifespan

if TYPE_CHECKING:
    from .host import Host

__all__ = ["MemoryGuard"]


class MemoryGuard:
    """A process executor's policy that stops a worker whose memory passes `max_memory`."""

    def __init__(self, host: Host, life: Lifespan) -> None:
        self.host = host
        self.life = life
        self._refresh: set[Piece] = set()  # stopped over max_memory on a used worker: run next on a fresh one
        self._second: set[Piece] = set()  # sent to a fresh worker after that: stopped again, the item is blamed

    def watch(self) -> None:
        """The sampler thread's loop: sample every worker until the stage ends (`Lifespan.stop`)."""
        self.life.watch(self._workers, self.over_limit)

    def _workers(self) -> list[WorkerProc]:
        host = self.host
        pool = host.pool
        with host._lock:
            return [] if pool is None else list(pool.workers)

    def over_limit(self, w: WorkerProc, rss: int) -> None:
        """The sampler saw `w` above max_memory: stop it (its item is accounted for when it dies)."""
        host = self.host
        life = self.life
        with host._lock:
            pool = host.pool
            if life.stop.is_set() or host.cancelled or pool is None or w not in pool.workers:
                return
            if life.killed(w):
                return  # stopped already
            if not w.outstanding and (not life.used(w) or life.retiring(w)):
                # fresh and idle: its first piece decides (no churn of new workers that start big);
                # retiring and idle: it is about to be replaced gently, its close() will run
                return
            life.mark_killed(w, rss)
            try:
                w.proc.kill()  # SIGKILL: a worker deep in an allocation cannot be asked
            except Exception:
                pass

    def wants_fresh(self, piece: Piece, w: WorkerProc) -> bool:
        """`piece` goes to `w` now (the host's lock held): True if `w` must first be swapped for a fresh worker."""
        if piece not in self._refresh:
            return False
        self._refresh.discard(piece)  # stopped over max_memory on a used worker: a fresh one decides
        self._second.add(piece)
        return self.life.used(w)

    def done(self, piece: Piece) -> None:
        """`piece` came back."""
        if self._second:
            self._second.discard(piece)

    def stopped(self, pieces: list[Piece], peak: int, first: bool) -> None:
        """The memory guard stopped a worker holding `pieces` (the first was running).

        A piece of several items runs again item by item (the base's rule for a
        dead worker). A lone item is blamed if it was its worker's first, or ran
        on a fresh worker already; otherwise a leak of earlier items may be to
        blame, so it runs once more on a freshly started worker.
        """
        if not pieces:
            return  # it had finished: an idle worker above the limit, replaced
        host = self.host
        running, rest = pieces[0], list(pieces[1:])
        if len(running.items) > 1:
            host._worker_died(pieces, self.life.memory_error(running, peak))  # split, nobody blamed yet
            return
        with host._lock:
            blame = first or running in self._second
            self._second.discard(running)
            if not blame:
                self._refresh.add(running)
        if blame:
            host._worker_died([running, *rest], self.life.memory_error(running, peak))
        else:
            host.port.give_back([running, *rest])
