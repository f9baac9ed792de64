"""Worker lifespans for process stages: recycling after N items, and the memory guard.

    sender thread     room(w)        items w may still take; a piece is cut to fit, so no
                                     worker runs more than max_tasks_per_worker items
    collector thread  finished(w,n)  count w's items; with max_memory, sample its RSS now,
                                     before its slot is free: out of items or above the
                                     limit -> w takes no more pieces and is replaced as
                                     soon as it holds none (close() runs in the old one)
    sampler thread    every GUARD_SECONDS (max_memory) or WATCH_SECONDS: each worker's
                      RSS; a worker above the limit is stopped (SIGKILL) -> the item it
                      was running fails with MemoryLimitExceeded, unless the worker had
                      run other items before (a leak, not this item): then the item runs
                      once more on a freshly started worker, and is blamed only there
    collector thread  death_note(w)  a worker SIGKILLed by someone else (the OOM killer):
                                     its last RSS, and the machine's available memory
                                     then and now

RSS is the resident memory the OS reports for the worker process, what the
OOM killer weighs (read from /proc on Linux, through psutil elsewhere). A
forked worker starts with the parent's pages counted in it; a limit a fresh
worker already exceeds fails the stage at start with that explanation.

What a worker has done is kept per worker process, not per run: a warm pool
lives across calls, and so do its leaks. A worker that used its items up
(or grew past the limit) in an earlier call is replaced before this stage
starts.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._core.errors import MemoryLimitExceeded, StageError, format_bytes, short_repr
from .._core.locks import ordered_lock
from .._core.threads import Job
from .._transport.serialize import dumps
from .lockorder import LIVES
from .meter import available, memory_meter
from .pool import ProcessPool, WorkerProc, stop_worker
from .port import Piece
from .wire import Teardown, encode

if TYPE_CHECKING:
    from .host import Host

__all__ = ["GUARD_SECONDS", "WATCH_SECONDS", "Lifespan", "Recycling"]

# How often the parent samples each worker's RSS while a stage runs. With max_memory an
# item that allocates faster than this can overshoot the limit by what it allocates in
# that time; without, samples only feed the stats and the note on a SIGKILLed worker.
GUARD_SECONDS = 0.05
WATCH_SECONDS = 0.5


class _Life:
    """What one worker process has done since it started (kept across runs of a warm pool)."""

    __slots__ = ("avail", "items", "killed", "proc", "retiring", "rss", "rss_at")

    def __init__(self) -> None:
        self.items = 0  # items it finished
        self.retiring = False  # takes no more pieces; replaced once it holds none
        self.killed = 0  # its RSS when the memory guard stopped it (0: it did not)
        self.rss = 0  # last sample, bytes
        self.rss_at = 0.0  # when (time.monotonic), 0.0: never sampled
        self.avail = -1  # the machine's available memory at the sampler's last tick
        self.proc: Any = None  # the meter's handle on its process


_lives: weakref.WeakKeyDictionary[WorkerProc, _Life] = weakref.WeakKeyDictionary()
_lives_lock = ordered_lock("worker lives", LIVES)  # a leaf: nothing else is taken while it is held


def _life(w: WorkerProc) -> _Life:
    life = _lives.get(w)
    if life is None:
        with _lives_lock:
            life = _lives.setdefault(w, _Life())
    return life


class Lifespan:
    """The lifespan rules of one process stage's workers (`spec.max_tasks_per_worker`, `spec.max_memory`)."""

    def __init__(self, spec: Any, report: Callable[..., None]) -> None:
        self.stage = spec.name
        self.max_tasks: int | None = spec.max_tasks_per_worker
        self.max_memory: int | None = spec.max_memory
        self.limits = self.max_tasks is not None or self.max_memory is not None
        self.interval = GUARD_SECONDS if self.max_memory is not None else WATCH_SECONDS
        self.stop = threading.Event()
        self.peak = 0
        self._report = report
        self._meter = memory_meter()
        if self._meter is None and self.max_memory is not None:
            raise RuntimeError("max_memory= measures workers with psutil, which is not installed: pip install psutil")

    # -- the sender: how many items a worker may still take -------------------

    def room(self, w: WorkerProc) -> int | None:
        """Items `w` may still be sent (None: no limit); 0 once it is retiring or used up."""
        life = _life(w)
        if life.retiring:
            return 0
        if self.max_tasks is None:
            return None
        held = sum(len(p.items) for p in w.outstanding)
        return max(0, self.max_tasks - life.items - held)

    def used(self, w: WorkerProc) -> bool:
        """`w` has run an item since it started."""
        return _life(w).items > 0

    # -- the collector: a piece came back ---------------------------------------

    def finished(self, w: WorkerProc, n: int) -> None:
        """`w` finished `n` items: count them; with max_memory, sample it now (it is idle:
        prefetch is 1), so a worker above the limit is replaced before its next piece."""
        life = _life(w)
        life.items += n
        if self.max_tasks is not None and life.items >= self.max_tasks:
            life.retiring = True
        if self.max_memory is not None and self.sample(w) > self.max_memory:
            life.retiring = True

    def retiring(self, w: WorkerProc) -> bool:
        return _life(w).retiring

    def spent(self, w: WorkerProc) -> bool:
        """At a stage's start: `w` used its items up, or is above the limit, in an earlier run."""
        life = _life(w)
        if life.items == 0:
            return False
        if self.max_tasks is not None and life.items >= self.max_tasks:
            return True
        return self.max_memory is not None and self.sample(w) > self.max_memory

    def too_big_to_start(self, w: WorkerProc, built: bool = False) -> str | None:
        """Why `w`, fresh (`built`: with the stage's class built in it), is above max_memory already, or None."""
        if self.max_memory is None:
            return None
        rss = self.sample(w)
        if rss <= self.max_memory:
            return None
        if built:
            return (
                f"max_memory={format_bytes(self.max_memory)} is below what a worker uses once it has built "
                f"the stage's class, before any item ({format_bytes(rss)} resident): raise max_memory"
            )
        return (
            f"max_memory={format_bytes(self.max_memory)} is below what a fresh worker process already uses "
            f"({format_bytes(rss)} resident): raise max_memory; a forked worker (start_method='fork') counts "
            "the parent's memory in its own until it writes to it, start_method='spawn' or 'forkserver' does not"
        )

    # -- measuring -------------------------------------------------------------

    def sample(self, w: WorkerProc, machine: bool = False) -> int:
        """Return `w`'s RSS in bytes now (its last sample if it cannot be read), and keep the stage's peak.

        `machine`: note the machine's available memory too (for `death_note`).
        """
        life = _life(w)
        meter = self._meter
        if meter is None:
            return life.rss
        if machine:
            life.avail = available(meter)
        try:
            if life.proc is None:
                life.proc = meter.handle(w.proc.pid)
            rss = meter.rss(life.proc)
        except (ValueError, OSError):
            return life.rss  # gone (its sentinel says so) or not started yet
        life.rss = rss
        life.rss_at = time.monotonic()
        if rss > self.peak:
            self.peak = rss
            self._report(peak_rss=rss)
        return rss

    def watch(self, workers: Callable[[], list[WorkerProc]], over: Callable[[WorkerProc, int], None]) -> None:
        """The sampler thread: sample every worker each `interval` until `stop`; call `over` for one above the limit."""
        meter = self._meter
        if meter is None:
            return
        while not self.stop.wait(self.interval):
            avail = available(meter)
            for w in workers():
                rss = self.sample(w)
                _life(w).avail = avail
                if self.max_memory is not None and rss > self.max_memory and not self.stop.is_set():
                    over(w, rss)

    def mark_killed(self, w: WorkerProc, rss: int) -> None:
        _life(w).killed = rss

    def killed(self, w: WorkerProc) -> int:
        """`w`'s RSS when the memory guard stopped it; 0 if the guard did not."""
        return _life(w).killed

    # -- reporting ------------------------------------------------------------

    def death_note(self, w: WorkerProc) -> str:
        """For a SIGKILLed worker: its last measured RSS and the machine's available memory (then, now)."""
        life = _life(w)
        if not life.rss_at:
            return ""
        note = f"; its last measured resident memory was {format_bytes(life.rss)}"
        note += f" ({time.monotonic() - life.rss_at:.1f} s before it died)"
        now = available(self._meter)
        if life.avail >= 0:
            note += f"; the machine had {format_bytes(life.avail)} of memory available then"
            if now >= 0:
                note += f", {format_bytes(now)} now"
        elif now >= 0:
            note += f"; the machine has {format_bytes(now)} of memory available now"
        return note

    def memory_error(self, piece: Piece, peak: int) -> MemoryLimitExceeded:
        """The error of the lone item in `piece`, whose worker was stopped at `peak` bytes."""
        chunk = piece.chunk
        return MemoryLimitExceeded(
            self.stage, chunk.idx[piece.start], short_repr(piece.items[0]), peak, self.max_memory or 0
        )


class Recycling:
    """A process executor's policy that replaces its workers on purpose (`Lifespan`'s rules).

    The host owns the pool, the pipes and the lock, and sends the stage's setup
    to a worker; this policy decides when a worker goes and replaces it
    without losing or repeating an item: only a worker that holds no piece is
    swapped, and the old one closes the stage (a class's ``close()``) and
    exits off the caller's thread.

        at start         renew_spent(pool), check_built(pool)
        sender (locked)  may_take(w), room(w), swap_locked(w); retired(old) after the lock
        collector        finished(w, n) (locked), after_result(w)
        at the end       join_retired()
    """

    def __init__(self, host: Host, life: Lifespan) -> None:
        self.host = host
        self.life = life
        self._retirements: list[threading.Thread | Job] = []

    def renew_spent(self, pool: ProcessPool) -> None:
        """Replace the warm workers that used their items up, or grew past max_memory, in an earlier run."""
        host = self.host
        for old in list(pool.workers):
            w = old
            self.life.sample(w, machine=True)  # a first figure, for a worker SIGKILLed before the first tick
            if self.life.spent(w):
                with host._lock:
                    w = pool.swap(old)
                self.retired(old, teardown=False)
            why = self.life.too_big_to_start(w)
            if why is not None:
                pool.kill()
                host._close_wake()
                raise StageError(host.spec.name, why)

    def check_built(self, pool: ProcessPool) -> None:
        """A class stage is built in every worker: fail the start if that alone passes max_memory."""
        for w in list(pool.workers):
            why = self.life.too_big_to_start(w, built=True)
            if why is not None:
                pool.kill()
                self.host._close_wake()
                raise StageError(self.host.spec.name, why)

    def may_take(self, w: WorkerProc) -> bool:
        """`w` may be sent a piece: it is not retiring (replaced once it holds no piece)."""
        return not (self.life.limits and self.life.room(w) == 0)

    def room(self, w: WorkerProc) -> int | None:
        """Items `w` may still be sent (None: no limit): no worker runs past max_tasks_per_worker."""
        return self.life.room(w)

    def finished(self, w: WorkerProc, n: int) -> None:
        """`w` finished `n` items (under the host's lock, before its slot is free: it may have to retire)."""
        self.life.finished(w, n)

    def after_result(self, w: WorkerProc) -> None:
        """A piece of `w` came back: replace it if it holds no more and must retire."""
        if self.life.limits and not w.outstanding and self.life.retiring(w):
            self.retire(w)

    def swap_locked(self, w: WorkerProc) -> WorkerProc:
        """Start a fresh worker in `w`'s place (the host's lock held); return it."""
        host = self.host
        assert host.pool is not None
        fresh = host.pool.swap(w)
        host._send_setup(fresh)  # before the sender can see it: its first message must be the setup
        host._tally.gone(w)
        host._tally.up(fresh, fresh=True)
        return fresh

    def retire(self, w: WorkerProc) -> None:
        """Replace `w`, which holds no piece, by a fresh worker (recycling)."""
        host = self.host
        with host._lock:
            pool = host.pool
            if pool is None or w not in pool.workers or host.cancelled:
                return
            self.swap_locked(w)
        self.retired(w)

    def retired(self, old: WorkerProc, teardown: bool = True) -> None:
        """`old` was swapped out: it closes the stage (a class's close()) and exits off this thread."""
        host = self.host
        host.port.report_workers(recycled=1)
        host.port.wake()
        host._spawn(lambda: self._stop_retired(old, teardown), "retire", also=self._retirements)

    def join_retired(self, timeout: float = 30.0) -> None:
        """Wait for retired workers to close the stage: its close() calls are over when the stage ends."""
        end = time.monotonic() + timeout
        with self.host._threads_lock:
            threads = list(self._retirements)
            self._retirements.clear()  # the same list: `_spawn(also=...)` appends to it under this lock
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))

    def _stop_retired(self, old: WorkerProc, teardown: bool) -> None:
        host = self.host
        if teardown and not host.cancelled:
            try:
                old.conn.send_bytes(dumps(encode(Teardown(host.token, want_reply=host.spec.is_class))))
            except OSError:
                pass
            else:
                host._await_closed(old, wait_close=host.spec.is_class)
        stop_worker(old)
