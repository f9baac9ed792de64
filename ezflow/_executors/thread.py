"""Thread executor: `workers` threads in this process take pieces and run them.

    port.take() --> thread 1..N: run_piece(runtime, items) --> port.done()
                                 (a long piece: done for its first items as they finish)
                    watchdog (only with `item_timeout`): fails an item that
                    overstays and starts a fresh thread in its place

Each thread builds its own runtime (a class stage is instantiated once per
thread, inside it). Threads cannot be killed: on cancel, a thread stops
after the item it is running; it is a daemon, so it never holds up exit.
With an `item_timeout`, an item that runs too long fails with `ItemTimeout` at
once and a new thread takes its worker's place; the stuck call goes on in
the background until it returns, and its result is dropped.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import TYPE_CHECKING

from .._core.threads import Job
from .base import Executor
from .items import build_runtime, close_runtime
from .limits import TokenBucket, make_limiter
from .port import Piece, StagePort
from .reporting import run_piece

if TYPE_CHECKING:
    from .._plan.spec import StageSpec

__all__ = ["ThreadExecutor"]


class _Parts:
    """`run_piece`'s report for one thread's piece: what is done goes to the port, the rest stays held."""

    __slots__ = ("executor", "ident", "piece", "worker")

    def __init__(self, executor: ThreadExecutor, piece: Piece, ident: int, worker: int) -> None:
        self.executor = executor
        self.piece = piece  # what is not reported yet
        self.ident = ident
        self.worker = worker

    def __call__(self, values: list, errs: list, busy: float, retries: int) -> None:
        self.executor.report_part(self, values, errs, busy, retries)


class ThreadExecutor(Executor):
    """Runs a stage on threads of this process."""

    def __init__(self, spec: StageSpec, port: StagePort) -> None:
        super().__init__(spec, port)
        self._ready = threading.Barrier(spec.workers + 1)
        self._start_error: BaseException | None = None
        self.limiter: TokenBucket | None = None
        self._lock = threading.Lock()
        self._running: dict[int, tuple[Piece, float, int]] = {}  # thread ident -> (piece, started, worker number)
        self._names = itertools.count()
        self._stop = threading.Event()
        self._abandoned: set[int] = set()  # threads still inside a timed-out call

    def setup(self) -> None:
        self.limiter = make_limiter(self.spec, shared=False)
        for _ in range(self.spec.workers):
            self._start_worker(self._ready)
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            pass
        if self._start_error is not None:
            raise self._setup_error(self._start_error) from self._start_error
        if self.spec.item_timeout is not None:
            self._spawn(self._watch, "watch")

    def _start_worker(self, ready: threading.Barrier | None) -> None:
        n = next(self._names)
        self._spawn(lambda: self._work(ready, n), f"thread{n}", own=True)  # runs the user's function

    def _work(self, ready: threading.Barrier | None, n: int) -> None:
        spec = self.spec
        t0 = time.perf_counter()
        try:
            rt = build_runtime(
                spec.kind, spec.fn, spec.is_class, spec.when, spec.retries,
                spec.retry_on, spec.backoff, pack=False, limiter=self.limiter,
            )
        except BaseException as exc:
            if ready is None:  # a replacement thread: the stage is running already
                self.port.fail(self._setup_error(exc))
                return
            self._start_error = exc
            ready.abort()
            return
        self.port.worker_up(n, None, time.perf_counter() - t0)
        if ready is not None:
            try:
                ready.wait()
            except threading.BrokenBarrierError:
                return
        port = self.port
        me = threading.get_ident()
        try:
            while True:
                piece = port.take()
                if piece is None:
                    return
                port.began(n, piece)
                with self._lock:
                    self._running[me] = (piece, time.monotonic(), n)
                part = _Parts(self, piece, me, n)
                values, errs, busy, retries = run_piece(rt, piece.items, piece.chunk.special, piece.attempts, part)
                with self._lock:
                    mine = self._running.pop(me, None) is not None
                if not mine:
                    return  # the watchdog failed this item and replaced us: drop the late result
                port.done(part.piece, values, errs, busy, retries, worker=n)
        finally:
            try:
                close_runtime(rt)
            except BaseException as exc:
                self._close_failed(exc)

    def report_part(self, part: _Parts, values: list, errs: list, busy: float, retries: int) -> None:
        """A thread reports the first items of its piece done while it runs the rest."""
        head, rest = part.piece.split(len(values))
        rest.attempts = part.piece.attempts
        with self._lock:
            held = self._running.get(part.ident)
            if held is None:
                return  # the watchdog failed this piece already: its results are dropped
            self._running[part.ident] = (rest, held[1], held[2])
        part.piece = rest
        self.port.done(head, values, errs, busy, retries, worker=part.worker)
        self.port.began(part.worker, rest)

    def _watch(self) -> None:
        timeout = self.spec.item_timeout
        assert timeout is not None
        while not self._stop.is_set():
            now = time.monotonic()
            expired = []
            with self._lock:
                for ident, (piece, started, n) in list(self._running.items()):
                    if now - started > timeout:
                        expired.append((piece, n))
                        del self._running[ident]
                        self._abandoned.add(ident)
                oldest = min((s for _, s, _ in self._running.values()), default=now)
            for piece, n in expired:
                self.port.worker_gone(n)
                err = self.rules.timeout_error(
                    "a thread cannot be stopped, so the call goes on in the background and its result is dropped"
                )
                self._start_worker(None)
                failed = self.rules.on_lost(piece, err, self.port.give_back)
                if failed is not None:
                    self.port.done(piece, [None] * len(piece.items), [failed], timeout)
            self._stop.wait(max(0.005, min(timeout, oldest + timeout - time.monotonic())))

    def _wakeup(self) -> None:
        # threads end by themselves: take() returns None (closing) or raises Cancelled
        self._stop.set()

    def _joinable(self, thread: threading.Thread | Job) -> bool:
        with self._lock:
            return thread.ident not in self._abandoned
