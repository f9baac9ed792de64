"""Background runs: `flow.start()` returns a `Handle` at once.

    caller thread                    collector thread (daemon)
    handle = flow.start()  ------->  run.start(); for chunk in run.chunks(): keep results
    handle.stats / .done()           (stats are live: the run's counters)
    handle.wait(timeout) <---------  results, or the run's error
    handle.cancel()        ------->  run.cancel(): workers stopped, finished results kept
    handle.put / submit / process -->  the Feed a source-less `Flow()` reads (see _feed)
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from .._core.entry import public
from .._core.errors import Failure
from .._core.mainguard import translate
from .._core.stats import FlowStats
from .._executors.port import Chunk
from .feed import Feed
from .run import Runner

__all__ = ["CancelSummary", "Handle"]


@dataclasses.dataclass(frozen=True, eq=False)
class CancelSummary(Mapping[str, int]):
    """What `Handle.cancel` kept: read ``summary.kept``, or ``summary["kept"]`` as the dict it once was.

    A read-only mapping of its two fields: it equals ``{"kept": k, "unfinished": u}``.
    """

    kept: int  # results that finished, kept in `handle.results`
    unfinished: int  # source items taken but not finished

    def __getitem__(self, key: str) -> int:
        if key not in ("kept", "unfinished"):
            raise KeyError(key)
        return int(getattr(self, key))

    def __iter__(self) -> Iterator[str]:
        return iter(("kept", "unfinished"))

    def __len__(self) -> int:
        return 2


class Handle:
    """A flow running in the background."""

    def __init__(self, run: Runner, timeout: float | None = None, feed: Feed | None = None) -> None:
        self._run = run
        self._feed = feed
        self._ordered = all(s.ordered for s in run.specs)
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
        feed = self._feed
        try:
            for chunk in run.chunks():
                if feed is not None and feed.has_futures():
                    self._resolve(chunk)
                else:
                    self._results.extend(chunk.items)
        except BaseException as exc:
            self._error = exc
        finally:
            if feed is not None:
                why = {"done": "the flow ended", "cancelled": "the flow was cancelled"}.get(
                    run.state, f"the flow failed: {self._error!r}"
                )
                feed.fail_pending(f"{why} before this item was processed", taken_gave_none=run.state == "done")
            self._finished.set()

    def _resolve(self, chunk: Chunk) -> None:
        assert self._feed is not None
        # in order, a later item's result means an earlier one gave none (filtered out)
        last = max(chunk.idx, default=-1) if self._ordered else None
        # taken under the feed's lock: the source thread adds Futures while this one resolves
        futures, dropped = self._feed.take_futures(list(chunk.idx), last)
        for index, item in zip(chunk.idx, chunk.items, strict=True):
            fut = futures.pop(index, None)
            if fut is None:
                self._results.append(item)
            elif isinstance(item, Failure):
                _settle(fut, error=translate(item.to_error()))  # a worker re-importing an unguarded script
            else:
                _settle(fut, value=item)
        for fut in dropped:
            _settle(fut, value=None)

    # -- feeding --------------------------------------------------------------

    def _need_feed(self) -> Feed:
        if self._feed is None:
            raise TypeError(
                "this flow reads a fixed source; to feed items while it runs, build it "
                "without one: handle = ezflow.Flow().map(...).start(); handle.put(item)"
            )
        return self._feed

    def put(self, item: Any, *, priority: int = 0) -> None:
        """Feed one item to the running flow; larger `priority` is taken first."""
        self._need_feed().put(item, priority)

    def close(self) -> None:
        """End the input: the flow finishes once the items put so far are done."""
        self._need_feed().close()

    def submit(self, item: Any, *, priority: int = 0) -> Future:
        """Feed one item and return a Future of its result (None if a filter dropped it or errors="skip" skipped it)."""
        fut: Future = Future()
        self._need_feed().put(item, priority, fut)
        return fut

    def feed(self, item: Any, future: Future) -> None:
        """Feed one item whose result settles `future` (made by the caller, e.g. ezflow.Executor)."""
        self._need_feed().put(item, 0, future)

    def start_on_claim(self) -> None:
        """Keep a taken item's future pending (cancellable) until its runner calls `feed.claim()`."""
        self._need_feed().start_on_claim()

    def cancel_waiting(self) -> int:
        """Cancel the futures of submitted items the flow has not taken yet; return how many."""
        return self._need_feed().cancel_pending()

    async def process(self, item: Any, *, priority: int = 0, timeout: float | None = None) -> Any:
        """Send one item through the whole flow and return its result.

        Raises:
            TimeoutError: no result within `timeout` seconds.
            TaskError: the item failed in a stage with ``errors="return"``
                (with ``errors="raise"`` a failure stops the whole flow).
            FlowStopped: the flow ended before the item was processed.
        """
        import asyncio

        fut = self.submit(item, priority=priority)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"the flow gave no result for this item within {timeout:g}s") from None

    @property
    def stats(self) -> FlowStats:
        """The run's figures now."""
        return self._run.snapshot()

    def done(self) -> bool:
        """Return True once the run has ended (done, failed or cancelled)."""
        return self._finished.is_set()

    @public
    def wait(self, timeout: float | None = None) -> list:
        """Wait for the run to end and return its results.

        Raises:
            TimeoutError: the run did not end within `timeout` seconds.
            TaskError, StageError: the run failed.
            (after `cancel()` or the panel's Stop button, it returns the results that finished)
        """
        if not self._finished.wait(timeout):
            raise TimeoutError(f"the flow is still running after {timeout:g}s")
        if self._error is not None and not (self._cancelled or self._run.stop_reason):
            raise self._error
        return list(self._results)

    @property
    def results(self) -> list:
        """The results delivered so far (all of them once the run is done)."""
        return list(self._results)

    def cancel(self) -> CancelSummary:
        """Stop the run now; keep the results that finished.

        Returns:
            A summary: how many results were kept and how many source items
            were taken but not finished.
        """
        self._cancelled = True
        self._run.request_stop("handle.cancel()")
        self._finished.wait(5)
        first = self._run.snapshot().stages
        taken = first[0].items_in if first else len(self._results)
        return CancelSummary(kept=len(self._results), unfinished=max(0, taken - len(self._results)))

    def __repr__(self) -> str:
        return f"<ezflow.Handle {self._run.state}, {len(self._results)} results>"


def _settle(fut: Future, value: Any = None, error: BaseException | None = None) -> None:
    # a caller that timed out has cancelled its future: its late result is dropped
    # (InvalidStateError: one look under the future's lock, not two)
    try:
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)
    except Exception:
        pass
