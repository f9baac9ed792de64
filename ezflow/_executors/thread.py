"""Thread executor: `workers` threads in this process pull pieces and run them.

    driver.next_piece() --> thread 1..N: run_piece(runtime, items) --> driver.on_result()
                            watchdog (only with `timeout`): fails an item that
                            overstays and starts a fresh thread in its place

Each thread builds its own runtime (a class stage is instantiated once per
thread, inside it). Threads cannot be killed: on cancel, a thread stops
after the item it is running; it is a daemon, so it never holds up exit.
With a `timeout`, an item that runs too long fails with `ItemTimeout` at
once and a new thread takes its worker's place; the stuck call goes on in
the background until it returns, and its result is dropped.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from .._engine.channel import Cancelled
from .._core.errors import short_repr
from . import StageError
from .items import build_runtime, close_runtime, run_piece
from .rules import ItemRules

__all__ = ["Executor"]


class Executor:
    """Runs a stage on threads of this process."""

    def __init__(self, spec: Any, driver: Any) -> None:
        self.spec = spec
        self.driver = driver
        self.threads: list[threading.Thread] = []
        self._ready = threading.Barrier(spec.workers + 1)
        self._setup_error: BaseException | None = None
        self.limiter: Any = None
        self._lock = threading.Lock()
        self._running: dict[int, tuple[Any, float]] = {}  # thread ident -> (piece, started)
        self._names = itertools.count()
        self._stop = threading.Event()
        self._abandoned: set[int] = set()  # threads still inside a timed-out call
        self.rules = ItemRules.of(spec)  # decides whether a timed-out item is tried again

    def setup(self) -> None:
        from .limits import make_limiter

        self.limiter = make_limiter(self.spec, shared=False)
        for _ in range(self.spec.workers):
            self._start_thread(self._ready)
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            pass
        if self._setup_error is not None:
            exc = self._setup_error
            raise StageError(self.spec.name, f"{short_repr(self.spec.fn)} raised {type(exc).__name__}: {exc}") from exc
        if self.spec.timeout is not None:
            t = threading.Thread(target=self._watch, name=f"ezflow-watch-{self.spec.name}", daemon=True)
            t.start()

    def _start_thread(self, ready: threading.Barrier | None) -> None:
        t = threading.Thread(
            target=self._work, args=(ready,), name=f"ezflow-{self.spec.name}-{next(self._names)}", daemon=True
        )
        with self._lock:
            self.threads.append(t)
        t.start()

    def _work(self, ready: threading.Barrier | None) -> None:
        spec = self.spec
        try:
            rt = build_runtime(
                spec.kind, spec.fn, spec.is_class, spec.when, spec.retries,
                spec.retry_on, spec.backoff, pack=False, limiter=self.limiter,
            )
        except BaseException as exc:
            if ready is None:  # a replacement thread: the stage is running already
                self.driver.run.abort(StageError(spec.name, f"{type(exc).__name__}: {exc}"))
                return
            self._setup_error = exc
            ready.abort()
            return
        if ready is not None:
            try:
                ready.wait()
            except threading.BrokenBarrierError:
                return
        driver = self.driver
        me = threading.get_ident()
        try:
            while True:
                piece = driver.next_piece()
                if piece is None:
                    return
                with self._lock:
                    self._running[me] = (piece, time.monotonic())
                values, errs, busy, retries = run_piece(rt, piece.items, piece.chunk.special, piece.attempts)
                with self._lock:
                    mine = self._running.pop(me, None) is not None
                if not mine:
                    return  # the watchdog failed this item and replaced us: drop the late result
                driver.on_result(piece, values, errs, busy, retries)
        except Cancelled:
            return
        except BaseException as exc:  # a bug here must fail the run, not hang it
            driver.run.abort(exc)
        finally:
            try:
                close_runtime(rt)
            except BaseException as exc:
                driver.run.abort(StageError(spec.name, f"close() raised {type(exc).__name__}: {exc}"), late=True)

    def _watch(self) -> None:
        timeout = self.spec.timeout
        assert timeout is not None
        while not self._stop.is_set() and not self.driver.cancelled:
            now = time.monotonic()
            expired = []
            with self._lock:
                for ident, (piece, started) in list(self._running.items()):
                    if now - started > timeout:
                        expired.append(piece)
                        del self._running[ident]
                        self._abandoned.add(ident)
                oldest = min((s for _, s in self._running.values()), default=now)
            for piece in expired:
                err = self.rules.timeout_error(
                    "a thread cannot be stopped, so the call goes on in the background and its result is dropped"
                )
                self._start_thread(None)
                failed = self.rules.on_lost(piece, err, self.driver.redo)
                if failed is not None:
                    self.driver.on_result(piece, [None] * len(piece.items), [failed], timeout)
            self._stop.wait(max(0.005, min(timeout, oldest + timeout - time.monotonic())))

    def close(self) -> None:
        self._stop.set()  # threads end by themselves when next_piece() returns None

    def cancel(self) -> None:
        self._stop.set()  # threads see Cancelled at their next next_piece()

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        with self._lock:
            threads = list(self.threads)
        for t in threads:
            if t is not threading.current_thread():
                with self._lock:
                    stuck = t.ident in self._abandoned
                if not stuck:
                    t.join(max(0.0, end - time.monotonic()))
