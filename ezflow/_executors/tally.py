"""Worker numbers for a stage's insights: which process is worker 0, 1, ... and what it runs.

    process executor --up(w) / began(w, piece) / gone(w) / of(w)--> WorkerTally --> port.worker_up / began / worker_gone

Process workers are pooled and outlive a stage, and replacements come and
go (a worker died, timed out, was recycled): the tally gives each one a
number the first time this stage uses it, and times its start-up from
when the stage (or, for a replacement, the worker) was started.
"""

from __future__ import annotations

import itertools
import time
import weakref

from .pool import WorkerProc
from .port import Piece, StagePort

__all__ = ["WorkerTally"]


class WorkerTally:
    """Numbers the worker processes of one stage and reports them to its port."""

    def __init__(self, port: StagePort) -> None:
        self.port = port
        self.since = time.perf_counter()  # when the stage started asking for workers
        # weak: with max_tasks_per_worker=1 a stage goes through a worker per item
        self._numbers: weakref.WeakKeyDictionary[WorkerProc, int] = weakref.WeakKeyDictionary()
        self._next = itertools.count()

    def up(self, w: WorkerProc, *, fresh: bool = False) -> None:
        """`w` is ready for this stage's pieces; `fresh`: it was started just now, in another's place."""
        if w in self._numbers:
            return
        n = self._numbers[w] = next(self._next)
        self.port.worker_up(n, w.proc.pid, time.perf_counter() - (w.born if fresh else self.since))

    def of(self, w: WorkerProc) -> int | None:
        """Return `w`'s number, None for a worker this stage never used."""
        return self._numbers.get(w)

    def began(self, w: WorkerProc, piece: Piece) -> None:
        """`w` starts running `piece` now (the head of what it holds)."""
        n = self._numbers.get(w)
        if n is not None:
            self.port.began(n, piece)

    def gone(self, w: WorkerProc) -> None:
        """`w` was replaced: it takes no more of this stage's pieces."""
        n = self._numbers.get(w)
        if n is not None:
            self.port.worker_gone(n)
