"""Background runs: `flow.start()` returns a `Handle` at once.

    caller thread                    collector thread (daemon)
    handle = flow.start()  ------->  run.start(); for chunk in run.chunks(): keep results
    handle.stats / .done()           (stats are live: the run's counters)
    handle.wait(timeout) <---------  results, or the run's error
    handle.cancel()        ------->  run.cancel(): workers stopped, finished results kept
"""

from __future__ import annotations

import threading
from typing import Any

from ._stats import FlowStats

__all__ = ["Handle"]


class Handle:
    """A flow running in the background."""

    def __init__(self, run: Any, timeout: float | None = None) -> None:
        self._run = run
        self._results: list = []
        self._error: BaseException | None = None
        self._finished = threading.Event()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._collect, name="ezflow-handle", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            slow = [s.name for s in run.snapshot() if s.state == "pending"]
            self.cancel()
            raise TimeoutError(
                f"the flow's workers did not start within {timeout:g}s"
                + (f" (still starting: {', '.join(slow)})" if slow else "")
            )
        if self._start_error is not None:
            raise self._start_error

    def _collect(self) -> None:
        run = self._run
        try:
            run.start()
        except BaseException as exc:
            self._start_error = exc
            self._error = exc
            self._started.set()
            self._finished.set()
            return
        self._started.set()
        try:
            for chunk in run.chunks():
                self._results.extend(chunk.items)
        except BaseException as exc:
            self._error = exc
        finally:
            self._finished.set()

    @property
    def stats(self) -> FlowStats:
        """The run's figures now."""
        return self._run.snapshot()

    def done(self) -> bool:
        """Return True once the run has ended (done, failed or cancelled)."""
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> list:
        """Wait for the run to end and return its results.

        Raises:
            TimeoutError: the run did not end within `timeout` seconds.
            TaskError, StageError: the run failed.
            (after `cancel()`, it returns the results that finished)
        """
        if not self._finished.wait(timeout):
            raise TimeoutError(f"the flow is still running after {timeout:g}s")
        if self._error is not None and not self._cancelled:
            raise self._error
        return list(self._results)

    @property
    def results(self) -> list:
        """The results delivered so far (all of them once the run is done)."""
        return list(self._results)

    def cancel(self) -> dict:
        """Stop the run now; keep the results that finished.

        Returns:
            A summary: how many results were kept and how many source items
            were taken but not finished.
        """
        self._cancelled = True
        self._run.cancel("cancelled")
        self._finished.wait(5)
        first = self._run.snapshot().stages
        taken = first[0].items_in if first else len(self._results)
        return {"kept": len(self._results), "unfinished": max(0, taken - len(self._results))}

    def __repr__(self) -> str:
        return f"<ezflow.Handle {self._run.state}, {len(self._results)} results>"
