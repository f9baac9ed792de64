"""Process executor: a warm pool of worker processes, one pipe each.

    driver.take_piece_locked()                     worker 1..N (own process)
         |                                              ^        |
    sender thread --("task", piece)--> pipe[w] ---------+        |
                                                                 v
    collector thread <--("result", ...)-- pipe[w] <--------------+
         |  also waits on each worker's sentinel (death) and on the
         |  oldest piece's deadline (per-item timeout)
         v
    driver.on_result(piece, values, errs, busy)

Sending and receiving are on different threads, so a worker blocked on
writing a large result can never deadlock with a parent blocked on
writing it more work. Each worker holds at most `prefetch` pieces, FIFO,
so when one dies the parent knows exactly what it held: the piece it was
running, and those queued behind it (which simply run elsewhere). A dead
worker's piece of one item becomes a `WorkerDied` failure; a larger piece
is re-run item by item to find the item that kills, and nothing else is
lost. The worker is replaced and the run goes on.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from multiprocessing.connection import wait
from typing import Any

from .._engine.channel import Cancelled
from .._core.env import default_start_method
from .._core.errors import WorkerDied, describe_exit, pack_exception, short_repr
from . import StageError
from .pool import ProcessPool, WorkerProc, acquire, release
from .._transport.serialize import dumps, loads
from .._transport.shm import StageLink
from .._engine.stage import Piece
from .rules import ItemRules
from .worker import setup_payload

__all__ = ["Executor"]

_tokens = itertools.count(1)


class Executor:
    """Runs a stage on a pool of worker processes."""

    def __init__(self, spec: Any, driver: Any) -> None:
        self.spec = spec
        self.driver = driver
        # a timed or rate-limited item must start when it is sent: no queue in the worker
        self.prefetch = 1 if spec.timeout is not None or spec.rate is not None else 2
        self.bucket = None
        if spec.rate is not None:
            from .limits import TokenBucket

            self.bucket = TokenBucket(spec.rate, spec.burst)
        self.token = next(_tokens)
        self.rules = ItemRules.of(spec)  # decides whether a timed-out or orphaned item is tried again
        self.pool: ProcessPool | None = None
        self._ids = itertools.count()
        self._stop = False
        self._cancelled = False
        self._broken = False
        self._timed_out: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()
        self._threads: list[threading.Thread] = []
        self._setup_msg = b""
        self._shm: StageLink = None  # type: ignore[assignment]  # set in setup()

    # -- start ------------------------------------------------------------

    def setup(self) -> None:
        spec = self.spec
        from .limits import make_limiter

        try:
            self._shm = StageLink(spec.share_arrays)
            with self._shm.setup_scope():  # arrays the function holds go by shared memory too
                payload = setup_payload(spec, make_limiter(spec, shared=True))
        except Exception as exc:
            raise StageError(spec.name, str(exc)) from exc
        self._setup_msg = dumps(("setup", self.token, payload, spec.is_class))
        self.pool = acquire(spec.start_method or default_start_method(), spec.workers)
        for w in self.pool.workers:
            self._send_setup(w)
        # A class is built now, in every worker: its errors (and a slow start) must
        # surface before any input is read. A function's setup only unpickles it:
        # tasks queue behind it, and the collector reports the rare failure.
        for w in list(self.pool.workers) if spec.is_class else ():
            err = self._await_ready(w)
            if err is not None:
                self.pool.kill()
                self._close_wake()
                raise StageError(spec.name, err[0]) from err[1]
        for target, name in ((self._send_loop, "send"), (self._collect_loop, "collect")):
            t = threading.Thread(target=target, name=f"ezflow-{name}-{spec.name}", daemon=True)
            self._threads.append(t)
            t.start()

    def _send_setup(self, w: WorkerProc) -> None:
        try:
            w.conn.send_bytes(self._setup_msg)
        except OSError:
            pass  # a worker already dead is found by its sentinel

    def _await_ready(self, w: WorkerProc) -> tuple[str, BaseException | None] | None:
        while True:
            ready = wait([w.conn, w.proc.sentinel])
            if w.conn in ready:
                try:
                    msg = loads(w.conn.recv_bytes())
                except (EOFError, OSError):
                    msg = None
                if msg is not None and msg[0] == "ready":
                    return None
                if msg is not None and msg[0] == "setup_failed":
                    _, _, exc, tb = msg
                    what = short_repr(self.spec.fn) + ("()" if self.spec.is_class else "")
                    exc.__cause__ = None
                    from .._core.errors import attach_traceback

                    attach_traceback(exc, tb)
                    return (f"{what} raised {type(exc).__name__}: {exc}", exc)
                if msg is not None:
                    continue
            w.proc.join(1)
            return (describe_exit(w.proc.exitcode, self.spec.name) + " while starting", None)

    # -- sending ------------------------------------------------------------

    def _free_worker(self, pool: ProcessPool) -> WorkerProc | None:
        best = None
        for w in pool.workers:
            n = len(w.outstanding)
            if n < self.prefetch and (best is None or n < len(best.outstanding)):
                best = w
        return best

    def _send_loop(self) -> None:
        d = self.driver
        pool = self.pool
        assert pool is not None
        try:
            while True:
                with d.cond:
                    while True:
                        if self._cancelled or d.cancelled or self._stop:
                            return
                        w = self._free_worker(pool)
                        piece = d.take_piece_locked() if w is not None else None
                        if piece is not None:
                            break
                        if self._stop or d.no_more_work_locked():
                            return
                        d.cond.wait()
                if self.bucket is not None:
                    self.bucket.acquire()  # outside the lock: pacing must not stall the collector
                with d.cond:
                    if w not in pool.workers or self._cancelled or d.cancelled:
                        d.redo_locked([piece])  # its worker died while we waited for a token
                        continue
                    limit = self._shm.max_items()  # items carrying big arrays go a few at a time
                    if limit is not None and len(piece.items) > limit:
                        piece, rest = piece.split(limit)
                        d.redo_locked([rest])
                    piece.id = next(self._ids)
                    w.outstanding.append(piece)
                    if len(w.outstanding) == 1:
                        w.sent_at = time.monotonic()
                try:
                    msg = ("task", piece.id, self.token, piece.items, piece.chunk.special, piece.attempts)
                    data = self._shm.dumps_task(piece.id, msg)
                except Exception as exc:
                    self._unsendable(w, piece, exc)
                    continue
                try:
                    w.conn.send_bytes(data)
                except OSError:
                    pass  # the worker died: the collector accounts for the piece
        except Cancelled:
            return
        except BaseException as exc:  # a bug here must fail the run, not hang it
            d.run.abort(exc)

    def _unsendable(self, w: WorkerProc, piece: Piece, exc: Exception) -> None:
        # Fail only the items that cannot travel; the others still run.
        with self.driver.cond:
            w.outstanding.remove(piece)
            self.driver.cond.notify_all()
        good, errs = [], []
        for pos, item in enumerate(piece.items):
            try:
                dumps(item, to_worker=True)
                good.append(Piece(piece.chunk, piece.start + pos, [item]))
            except Exception as e:
                err = TypeError(f"the item cannot be sent to a worker process: {type(e).__name__}: {e}")
                errs.append(Piece(piece.chunk, piece.start + pos, [item]))
                errs[-1].id = -1
                self.driver.on_result(errs[-1], [None], [(0, *pack_exception(err), 1)], 0.0)
        if good:
            self.driver.redo(good)

    # -- receiving ----------------------------------------------------------

    def _collect_loop(self) -> None:
        d = self.driver
        try:
            while not self._cancelled:
                with d.cond:
                    workers = list(self.pool.workers)  # type: ignore[union-attr]
                    idle = self._stop and not any(w.outstanding for w in workers)
                if idle:
                    break
                conns = {w.conn: w for w in workers}
                sentinels = {w.proc.sentinel: w for w in workers}
                ready = wait([*conns, *sentinels, self._wake_r], self._next_deadline(workers))
                if self._cancelled:
                    break
                if self._wake_r in ready:
                    os.read(self._wake_r, 512)
                for obj in ready:
                    if obj in conns:
                        self._receive(conns[obj])
                for obj in ready:
                    if obj in sentinels:
                        self._died(sentinels[obj])
                self._check_timeouts(workers)
        except Cancelled:
            pass
        except BaseException as exc:  # a bug here must fail the run, not hang it
            self._broken = True
            d.run.abort(exc)
        finally:
            self._finish()

    def _receive(self, w: WorkerProc) -> None:
        try:
            msg = self._shm.loads(w.conn.recv_bytes())
        except (EOFError, OSError):
            self._died(w)
            return
        op = msg[0]
        if op == "result":
            _, pid, values, errs, busy, retries = msg
            self._shm.done(pid)
            with self.driver.cond:
                piece = w.outstanding.popleft()
                if w.outstanding:
                    w.sent_at = time.monotonic()
                self.driver.cond.notify_all()
            if piece.id != pid:  # pragma: no cover - a protocol bug, never data loss in silence
                raise RuntimeError(f"worker answered piece {pid}, expected {piece.id}")
            self.driver.on_result(piece, values, errs, busy, retries)
        elif op == "setup_failed":
            _, _, exc, tb = msg
            self._broken = True
            what = short_repr(self.spec.fn) + ("()" if self.spec.is_class else "")
            err = StageError(self.spec.name, f"{what} could not be set up in a worker: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            self.driver.run.abort(err)

    def _died(self, w: WorkerProc) -> None:
        d = self.driver
        pool = self.pool
        if pool is None or w not in pool.workers or self._cancelled or self._stop:
            return
        # results the worker sent before it died are still in the pipe
        while True:
            try:
                if not w.conn.poll():
                    break
                msg = loads(w.conn.recv_bytes())
            except (EOFError, OSError):
                break
            if msg[0] == "result":
                _, pid, values, errs, busy, retries = msg
                self._shm.done(pid)
                with d.cond:
                    piece = w.outstanding.popleft()
                d.on_result(piece, values, errs, busy, retries)
        w.proc.join(1)
        code = w.proc.exitcode
        timed_out = id(w) in self._timed_out
        self._timed_out.discard(id(w))
        with d.cond:
            pieces = list(w.outstanding)
            w.outstanding.clear()
            fresh = pool.replace(w)
            self._send_setup(fresh)  # before the sender can see it: its first message must be the setup
            d.cond.notify_all()
        self._shm.done(*(p.id for p in pieces))
        self._shm.reap()  # segments the dead worker made and never sent
        if not pieces:
            return
        running, rest = pieces[0], pieces[1:]
        if len(running.items) == 1:
            if timed_out:
                err: BaseException = self.rules.timeout_error("its worker process was stopped")
            else:
                err = WorkerDied(code, self.spec.name)
            failed = self.rules.on_lost(running, err, d.redo)
            if failed is not None:
                d.on_result(running, [None], [failed], 0.0)
        else:
            rest = [
                Piece(running.chunk, running.start + i, [item], isolated=True)
                for i, item in enumerate(running.items)
            ] + rest
        if rest:
            d.redo(rest)

    def _next_deadline(self, workers: list[WorkerProc]) -> float | None:
        timeout = self.spec.timeout
        if timeout is None:
            return None
        starts = [w.sent_at for w in workers if w.outstanding]
        if not starts:
            return None
        return max(0.0, min(starts) + timeout - time.monotonic()) + 0.001

    def _check_timeouts(self, workers: list[WorkerProc]) -> None:
        timeout = self.spec.timeout
        if timeout is None:
            return
        now = time.monotonic()
        for w in workers:
            if w.outstanding and now - w.sent_at > timeout and id(w) not in self._timed_out:
                self._timed_out.add(id(w))
                try:
                    w.proc.kill()  # SIGKILL: works even on C code that ignores signals
                except Exception:
                    pass

    # -- ending -------------------------------------------------------------

    def _finish(self) -> None:
        pool = self.pool
        if pool is None:
            return
        healthy = not (self._cancelled or self._broken or self.driver.cancelled)
        if healthy:
            teardown = dumps(("teardown", self.token, self.spec.is_class))
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
        release(pool, healthy)
        self._shm.close()
        self._close_wake()

    def _await_closed(self, w: WorkerProc, wait_close: bool) -> bool:
        if not wait_close:
            return True  # a function stage's teardown sends no answer
        while True:
            ready = wait([w.conn, w.proc.sentinel], 30)
            if w.conn not in ready:
                return False
            try:
                msg = loads(w.conn.recv_bytes())
            except (EOFError, OSError):
                return False
            if msg[0] != "closed":
                continue
            _, _, exc, tb = msg
            if exc is not None:
                self.driver.run.abort(
                    StageError(self.spec.name, f"close() raised {type(exc).__name__}: {exc}"),
                    late=True,
                )
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

    def close(self) -> None:
        self._stop = True
        self._wake()
        with self.driver.cond:
            self.driver.cond.notify_all()

    def cancel(self) -> None:
        self._cancelled = True
        pool = self.pool
        if pool is not None:
            # only signal here: the collector reaps and closes pipes it may be waiting on
            for w in list(pool.workers):
                try:
                    w.proc.kill()
                except Exception:
                    pass
        self._wake()
        with self.driver.cond:
            self.driver.cond.notify_all()

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(max(0.0, end - time.monotonic()))
