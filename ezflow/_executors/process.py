"""Process executor: a warm pool of worker processes, one pipe each.

    port.take(room: a worker has a free slot)      worker 1..N (own process)
         |                                              ^        |
    sender thread ----Task(piece)----> pipe[w] ---------+        |
                                                                 v
    collector thread <---Partial* Result- pipe[w] <--------------+
         |  also waits on each worker's sentinel (death) and on the
         |  deadline of the oldest item running (per-item time limit:
         |  each worker marks the attempt it starts, see `deadline`)
         v
    port.done(piece, values, errs, busy)   (a Partial: done for the piece's
                                            first items, the rest stays held)

Sending and receiving are on different threads, so a worker blocked on
writing a large result can never deadlock with a parent blocked on
writing it more work. Each worker holds at most `prefetch` pieces, FIFO,
so when one dies the parent knows exactly what it held: the piece it was
running, and those queued behind it (which simply run elsewhere). A dead
worker's piece of one item becomes a `WorkerDied` failure; a larger piece
is re-run item by item to find the item that kills, and nothing else is
lost. The worker is replaced and the run goes on.

Policies, held as parts and called at fixed points (they see the executor
through `host.Host`): recycling after N items (`recycle`), the memory guard
and its sampler thread (`memguard`), the CPU budget's worker count
(`elastic`), per-item time limits (`deadline`). One lock guards the pool's
workers and what each holds; the lock order is `lockorder`, checked in tests.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from functools import partial
from multiprocessing.connection import wait
from typing import TYPE_CHECKING

from .._core.env import default_start_method
from .._core.errors import StageError, WorkerDied, attach_traceback, describe_exit
from .._core.locks import ordered_lock
from .._transport.serialize import dumps
from .._transport.shm import StageLink
from .backlog import Backlogs
from .base import Executor
from .deadline import Deadlines
from .elastic import ElasticSizing
from .freshness import before_acquire
from .limits import TokenBucket, make_limiter
from .lockorder import EXECUTOR
from .memguard import MemoryGuard
from .pipes import await_closed, await_ready, left_in_pipe
from .pool import ProcessPool, WorkerProc, acquire, release
from .port import ItemError, Piece, StagePort
from .recycle import Lifespan, Recycling
from .tally import WorkerTally
from .wire import (
    Partial,
    Ready,
    Result,
    Setup,
    SetupFailed,
    Task,
    Teardown,
    Unloadable,
    answered_piece,
    decode,
    encode,
)
from .worker import setup_payload

if TYPE_CHECKING:
    from .._core.locks import LockLike
    from .._plan.spec import StageSpec

__all__ = ["ProcessExecutor"]

_tokens = itertools.count(1)


class ProcessExecutor(Executor):
    """Runs a stage on a pool of worker processes, with its policies held as parts.

    recycling (`Recycling`), the memory guard (`MemoryGuard`), elastic sizing
    (`ElasticSizing`) and per-item deadlines (`Deadlines`) are called at
    defined points: the start, a piece sent, a piece done, a worker's death,
    the collector's look at the time, the end. They reach the executor only
    through `host.Host`; its one lock comes first in the lock order (`lockorder`).
    """

    sends_to = "a worker process"

    def __init__(self, spec: StageSpec, port: StagePort) -> None:
        super().__init__(spec, port)
        self._life = Lifespan(spec, port.report_workers)  # the lifespan rules: recycling's and the memory guard's
        self._tally = WorkerTally(port)  # worker numbers for the stage's insights
        self.recycling = Recycling(self, self._life)
        self.memory_guard = MemoryGuard(self, self._life)
        self.sizing = ElasticSizing(self)
        self.deadlines = Deadlines(port, self.rules, spec.item_timeout)
        # a rate-limited item must start when it is sent: no queue in the worker
        # ezflow.Executor's calls: none waits behind a busy worker while another is free
        self.prefetch = 1 if spec.rate is not None or spec.start_when_free else 2
        self.bucket = TokenBucket(spec.rate, spec.burst) if spec.rate is not None else None
        self.token = next(_tokens)
        self.pool: ProcessPool | None = None
        self._handed_back = False  # the pool went back to the warm cache (or was killed) in _finish
        self._ids = itertools.count()
        # guards the pool's worker list and each worker's outstanding pieces (sender vs collector)
        self._lock: LockLike = ordered_lock("process executor", EXECUTOR)
        self._wake_r, self._wake_w = os.pipe()
        self._setup_msg = b""
        self._shm: StageLink = None  # type: ignore[assignment]  # set in setup()
        self._backlogs = Backlogs(spec.name)
        if spec.max_memory is not None:
            self.prefetch = 1  # a worker's RSS is checked between pieces: the next one waits for the check

    # -- the budget (elastic sizing) ------------------------------------------

    def resize(self, workers: int) -> None:
        """Run `workers` of the pool's workers from now on; start more if the pool has fewer."""
        self.sizing.resize(workers)

    def sched_seconds(self) -> tuple[float, float | None] | None:
        """Return the CPU seconds this stage's workers used, and the seconds they waited for a core."""
        return self.sizing.sched_seconds()

    # -- start ------------------------------------------------------------

    def setup(self) -> None:
        spec = self.spec
        self._tally.since = time.perf_counter()
        try:
            self._shm = StageLink(spec.share_arrays)
            with self._shm.setup_scope():  # arrays the function holds go by shared memory too
                payload = setup_payload(spec, make_limiter(spec, shared=True))
        except Exception as exc:
            raise StageError(spec.name, str(exc)) from exc
        timed = spec.item_timeout is not None
        self._setup_msg = dumps(encode(Setup(self.token, payload, want_ready=spec.is_class, timed=timed)))
        before_acquire(spec.fn)  # a module reloaded by the caller: no warm worker keeps the old one
        # under a CPU budget any warm pool with room for `active` will do: the rest wait, parked
        method = spec.start_method or default_start_method()
        active = self.sizing.active
        if active is None:
            pool = acquire(method, spec.workers, fresh=spec.private_pool)
        else:
            pool = acquire(method, active, up_to=spec.workers, fresh=spec.private_pool)
        with self._lock:
            self.pool = pool
        self.recycling.renew_spent(pool)
        for w in pool.workers:
            self._send_setup(w)
        # A class is built now, in every worker: its errors (and a slow start) must
        # surface before any input is read. A function's setup only unpickles it:
        # tasks queue behind it, and the collector reports the rare failure.
        for w in list(pool.workers) if spec.is_class else ():
            err = self._await_ready(w)
            if err is not None:
                pool.kill()
                self._close_wake()
                raise err
        if spec.is_class:
            self.recycling.check_built(pool)
        for w in pool.workers:
            self._tally.up(w)
        self._spawn(self._send_loop, "send")
        self._spawn(self._collect_loop, "collect", after=self._finish)
        self._spawn(self.memory_guard.watch, "memory")

    def _send_setup(self, w: WorkerProc) -> None:
        try:
            w.conn.send_bytes(self._setup_msg)
        except OSError:
            pass  # a worker already dead is found by its sentinel

    def _await_ready(self, w: WorkerProc) -> StageError | None:
        msg = await_ready(w)
        if type(msg) is Ready:
            return None
        if type(msg) is SetupFailed:
            exc = msg.error
            exc.__cause__ = None
            return self._setup_error(attach_traceback(exc, msg.tb))
        return StageError(self.spec.name, describe_exit(w.proc.exitcode, self.spec.name) + " while starting")

    # -- sending ------------------------------------------------------------

    def _free_worker(self, pool: ProcessPool) -> WorkerProc | None:
        best = None
        for w in self.sizing.candidates(pool):
            n = len(w.outstanding)
            if not self.recycling.may_take(w):
                continue  # retiring: replaced once it holds no piece
            if n < self.prefetch and (best is None or n < len(best.outstanding)):
                best = w
        return best

    def _send_loop(self) -> None:
        pool = self.pool
        assert pool is not None
        port = self.port

        def room() -> bool:
            return self._free_worker(pool) is not None

        while True:
            piece = port.take(room)
            if piece is None:
                return
            if self.bucket is not None:
                self.bucket.acquire()  # outside any lock: pacing must not stall the collector
            rest = None
            old = None
            with self._lock:
                w = None if self.cancelled else self._free_worker(pool)
                if w is not None:
                    if self.memory_guard.wants_fresh(piece, w):
                        old, w = w, self.recycling.swap_locked(w)
                    limit = self._shm.max_items()  # items carrying big arrays go a few at a time
                    left = self.recycling.room(w)  # no worker runs past max_tasks_per_worker
                    if left is not None:
                        limit = left if limit is None else min(limit, left)
                    if limit is not None and len(piece.items) > limit:
                        piece, rest = piece.split(limit)
                    piece.id = next(self._ids)
                    w.outstanding.append(piece)
                    if len(w.outstanding) == 1:
                        self._tally.began(w, piece)
                        if self.spec.item_timeout is not None:
                            self._wake()  # the collector must look at this worker's items' deadlines
            if old is not None:
                self.recycling.retired(old)
            if w is None:
                port.give_back([piece])  # its worker died while we waited for a token
                continue
            if rest is not None:
                port.give_back([rest])
            try:
                data = self._shm.dumps_task(piece.id, len(piece.items), partial(_task, piece, self.token))
            except Exception as exc:
                with self._lock:
                    w.outstanding.remove(piece)
                port.wake()
                self._unsendable(piece, exc)
                continue
            self._backlogs.put(w, data)  # a big message that could not go by shared memory waits off this thread

    # -- receiving ----------------------------------------------------------

    def _collect_loop(self) -> None:
        pool = self.pool
        assert pool is not None
        while not self.cancelled:
            with self._lock:
                workers = list(pool.workers)
                idle = self.closing and not any(w.outstanding for w in workers)
            if idle:
                break
            conns = {w.conn: w for w in workers}
            sentinels = {w.proc.sentinel: w for w in workers}
            ready = wait([*conns, *sentinels, self._wake_r], self.deadlines.next_wait(workers))
            if self.cancelled:
                break
            if self._wake_r in ready:
                os.read(self._wake_r, 512)
            for obj in ready:
                if obj in conns:
                    self._receive(conns[obj])
            for obj in ready:
                if obj in sentinels:
                    self._died(sentinels[obj])
            self.deadlines.check(workers)

    def _pop(self, w: WorkerProc) -> Piece:
        with self._lock:
            piece = w.outstanding.popleft()
            self.recycling.finished(w, len(piece.items))  # before its slot is free: it may have to retire
            if w.outstanding:
                self._tally.began(w, w.outstanding[0])
        self.port.wake()  # the worker has a free slot
        return piece

    def _receive(self, w: WorkerProc) -> None:
        try:
            msg = decode(self._shm.loads(w.conn.recv_bytes(), answered_piece))
        except (EOFError, OSError):
            self._died(w)
            return
        kind = type(msg)
        if kind is Partial:
            self._partial(w, msg)
        elif kind is Result:
            self._shm.done(msg.piece_id)
            piece = self._pop(w)
            if piece.id != msg.piece_id:  # pragma: no cover - a protocol bug, never data loss in silence
                raise RuntimeError(f"worker answered piece {msg.piece_id}, expected {piece.id}")
            self.port.done(piece, msg.values, msg.errs, msg.busy, msg.retries, worker=self._tally.of(w))
            self.memory_guard.done(piece)
            self.recycling.after_result(w)
        elif kind is Unloadable:
            self._unloadable(w, msg.error, msg.tb)
        elif kind is SetupFailed:
            self.broken = True
            self.port.fail(self._setup_error(attach_traceback(msg.error, msg.tb), "in a worker"))

    def _partial(self, w: WorkerProc, msg: Partial) -> None:
        """The worker sent the first results of the piece it runs: they are done; it holds the rest."""
        with self._lock:
            piece = w.outstanding[0]
            if piece.id != msg.piece_id:  # pragma: no cover - a protocol bug, never data loss in silence
                raise RuntimeError(f"worker answered piece {msg.piece_id} in part, expected {piece.id}")
            head, rest = piece.split(len(msg.values))
            rest.id, rest.attempts = piece.id, piece.attempts
            w.outstanding[0] = rest
            self.recycling.finished(w, len(head.items))
        self.port.done(head, msg.values, msg.errs, msg.busy, msg.retries, worker=self._tally.of(w))
        self._tally.began(w, rest)

    def _unloadable(self, w: WorkerProc, exc: BaseException, tb: str) -> None:
        """The worker could not unpickle the piece it was sent: fail the item that does not load."""
        piece = self._pop(w)
        self._shm.done(piece.id)
        if len(piece.items) > 1:
            self.port.give_back(piece.singles())  # each alone: only the bad one fails
            return
        note = "(raised while the worker process unpickled this item: it pickles here but does not load there)"
        self.port.done(piece, [None], [ItemError(0, exc, f"{tb}{note}\n", piece.attempts + 1)], 0.0)

    def _died(self, w: WorkerProc) -> None:
        pool = self.pool
        if pool is None or w not in pool.workers or self.cancelled or self.closing:
            return
        if pool.terminated:  # the process got SIGTERM: end the run, start no worker
            self.port.fail(StageError(self.spec.name, "the process received SIGTERM; its workers were stopped"))
            return
        # results the worker sent before it died are still in the pipe
        for msg in left_in_pipe(w):
            if type(msg) is Partial:
                self._partial(w, msg)
            elif type(msg) is Result:
                self._shm.done(msg.piece_id)
                self.port.done(self._pop(w), msg.values, msg.errs, msg.busy, msg.retries, worker=self._tally.of(w))
        w.proc.join(1)
        code = w.proc.exitcode
        peak = self._life.killed(w)  # the memory guard stopped it at this RSS
        first = not self._life.used(w)  # the piece it was running was its first
        run = self.deadlines.stopped_for(w)
        with self._lock:
            pieces = list(w.outstanding)
            w.outstanding.clear()
            fresh = pool.replace(w)
            self._send_setup(fresh)  # before the sender can see it: its first message must be the setup
            self._tally.gone(w)
            self._tally.up(fresh, fresh=True)
        self.port.wake()
        self._shm.done(*(p.id for p in pieces))
        self._shm.reap()  # segments the dead worker made and never sent
        err: BaseException
        if peak and run is None:
            self.port.report_workers(recycled=1)
            self.memory_guard.stopped(pieces, peak, first)
            return
        if run is not None:
            self.deadlines.overran(pieces, run)
            return
        err = WorkerDied(code, self.spec.name)
        if code == -signal.SIGKILL:  # perhaps the OOM killer: say how big it was, and the machine's memory
            err.args = (str(err) + self._life.death_note(w),)
        self._worker_died(pieces, err)

    # -- ending -------------------------------------------------------------

    def _finish(self) -> None:
        with self._lock:
            self._life.stop.set()  # before the pool goes back: the sampler must not stop another run's worker
        self.recycling.join_retired()
        pool = self.pool
        if pool is None:
            return
        for w in pool.workers if not self.cancelled else ():
            self._life.sample(w)  # a last figure for the stats' peak RSS (short runs end between ticks)
        healthy = not (self.cancelled or self.broken)
        if healthy:
            teardown = dumps(encode(Teardown(self.token, want_reply=self.spec.is_class)))
            for w in pool.workers:
                try:
                    w.conn.send_bytes(teardown)
                except OSError:
                    healthy = False
            # only a class stage's close() can fail or take time: wait for it then;
            # for a function the next run's messages simply queue behind the teardown
            for w in pool.workers:
                if healthy and not self._await_closed(w, wait_close=self.spec.is_class):
                    healthy = False
            self.sizing.shed_growth(pool)
        with self._lock:
            # From here the pool is no longer this stage's to stop: a cancel after the stage
            # ended (its run failed in a later stage) must not kill a warm pool that the
            # next run may already hold. A cancel before this point made it unhealthy.
            healthy = healthy and not self.cancelled
            self._handed_back = True
        if not self.spec.private_pool:
            release(pool, healthy)
        elif healthy:  # never warm: its workers hold the caller's memory as it was when they were forked
            pool.close()
        else:
            pool.kill()
        self._shm.close()
        self._close_wake()

    def _await_closed(self, w: WorkerProc, wait_close: bool) -> bool:
        if not wait_close:
            return True  # a function stage's teardown sends no answer
        msg = await_closed(w)
        if msg is None:
            return False
        if msg.error is not None:
            self._close_failed(msg.error, msg.tb)
        return True

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def _wakeup(self) -> None:
        self._wake()
        super()._wakeup()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            pool = None if self._handed_back else self.pool
        self._life.stop.set()
        if pool is not None:
            # only signal here: the collector reaps and closes pipes it may be waiting on
            for w in list(pool.workers):
                try:
                    w.proc.kill()
                except Exception:
                    pass
        self._wakeup()


def _task(piece: Piece, token: int, share: tuple | None) -> tuple:
    return encode(Task(piece.id, token, piece.items, piece.chunk.special, piece.attempts, share))
