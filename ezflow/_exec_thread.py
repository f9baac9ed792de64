"""Thread executor: `workers` threads in this process pull pieces and run them.

    driver.next_piece() --> thread 1..N: run_piece(runtime, items) --> driver.on_result()

Each thread builds its own runtime (a class stage is instantiated once per
thread, inside it). Threads cannot be killed: on cancel, a thread stops
after the item it is running; it is a daemon, so it never holds up exit.
"""

from __future__ import annotations

import threading
from typing import Any

from ._channel import Cancelled
from ._errors import short_repr
from ._executors import StageError
from ._task import build_runtime, close_runtime, run_piece

__all__ = ["Executor"]


class Executor:
    """Runs a stage on threads of this process."""

    def __init__(self, spec: Any, driver: Any) -> None:
        self.spec = spec
        self.driver = driver
        self.threads: list[threading.Thread] = []
        self._ready = threading.Barrier(spec.workers + 1)
        self._setup_error: BaseException | None = None
        self.limiter = None

    def setup(self) -> None:
        from ._limits import make_limiter

        self.limiter = make_limiter(self.spec, shared=False)
        for i in range(self.spec.workers):
            t = threading.Thread(
                target=self._work, name=f"ezflow-{self.spec.name}-{i}", daemon=True
            )
            self.threads.append(t)
            t.start()
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            pass
        if self._setup_error is not None:
            exc = self._setup_error
            raise StageError(self.spec.name, f"{short_repr(self.spec.fn)} raised {type(exc).__name__}: {exc}") from exc

    def _work(self) -> None:
        spec = self.spec
        try:
            rt = build_runtime(
                spec.kind, spec.fn, spec.is_class, spec.when, spec.retries,
                spec.retry_on, spec.backoff, pack=False, limiter=self.limiter,
            )
        except BaseException as exc:
            self._setup_error = exc
            self._ready.abort()
            return
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            return
        driver = self.driver
        try:
            while True:
                piece = driver.next_piece()
                if piece is None:
                    return
                values, errs, busy, retries = run_piece(rt, piece.items, piece.chunk.special)
                driver.on_result(piece, values, errs, busy, retries)
        except Cancelled:
            return
        except BaseException as exc:  # a bug here must fail the run, not hang it
            driver.run.abort(exc)
        finally:
            try:
                close_runtime(rt)
            except BaseException as exc:
                driver.run.abort(StageError(spec.name, f"close() raised {type(exc).__name__}: {exc}"))

    def close(self) -> None:
        pass  # threads end by themselves when next_piece() returns None

    def cancel(self) -> None:
        pass  # threads see Cancelled at their next next_piece()

    def join(self, timeout: float) -> None:
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout)
