"""An open source: items put into a running flow, highest priority first.

    handle.put(item, priority)  --+
    handle.submit(item) -> Future  +--> Feed (heap: priority, then arrival) --iter--> the run's source
    await handle.process(item)  --+                                             (index = order taken)

`Flow()` with no source reads a Feed; `handle.close()` ends it. Items wait
here while the flow is busy, and the waiting ones are taken by priority.
Each item taken gets the next source index; a Future registered for an
item is kept under that index so the handle can resolve it from the
results. A Future follows `concurrent.futures` rules: it is running once
the flow takes its item (``cancel()`` then returns False); cancelled while
it waits here, its item is dropped and ``wait``/``as_completed`` see it
at once. When the run ends, every Future still pending fails: nothing
waits forever on a flow that has stopped.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import Future, InvalidStateError
from typing import Any

__all__ = ["Feed", "FlowStopped", "claim"]


class FlowStopped(RuntimeError):
    """The flow ended before this item was processed."""


class Feed:
    """A thread-safe, closable priority queue that a flow reads as its source."""

    HANDS_OUT_WAITING = True  # source.ChunkReader takes what waits with take(n), without a reader thread

    def __init__(self, maxsize: int = 0) -> None:
        self._heap: list[tuple[int, int, Any, Future | None]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._maxsize = maxsize
        self._taken = 0
        self._futures: dict[int, Future] = {}  # by source index; the source thread adds, the handle takes
        self._waiting: set[Future] = set()  # futures of items still in the heap, not cancelled
        self._readers = 0  # threads waiting in take() for an item
        self._on_claim = False  # True: a taken item's future turns running only at claim()

    def put(self, item: Any, priority: int = 0, future: Future | None = None) -> None:
        """Add an item; a larger `priority` is taken sooner. Block while full."""
        with self._cond:
            if self._closed:
                raise RuntimeError("this flow's input is closed: put() after close()")
            while self._maxsize and len(self._heap) >= self._maxsize:
                self._cond.wait()
            heapq.heappush(self._heap, (-priority, next(self._seq), item, future))
            if future is not None:
                self._waiting.add(future)
            if self._readers:  # no wakeup per call while the flow is busy taking
                self._cond.notify_all()
        if future is not None:
            future.add_done_callback(self._on_done)

    def start_on_claim(self) -> None:
        """Leave a taken item's future pending until its runner calls `claim()` (at a worker).

        The flow may then take items ahead of its workers (no wakeup per
        call, no call waiting on the one before), while each call stays
        cancellable until a worker starts it, as with `concurrent.futures`.
        """
        with self._cond:
            self._on_claim = True

    def _on_done(self, future: Future) -> None:
        """A future cancelled while its item waits: tell its waiters now, not when the item comes up."""
        if not future.cancelled():
            return
        with self._cond:
            if future not in self._waiting and not self._on_claim:
                return  # taken already (it was running: cancel() said no), or failed by fail_pending
            self._waiting.discard(future)
        # CANCELLED -> CANCELLED_AND_NOTIFIED; with start_on_claim a taken item's future can be
        # cancelled only before claim(), which then skips it and leaves it alone
        with future._condition:
            if future._state == "CANCELLED":  # not told yet (fail_pending may have)
                future.set_running_or_notify_cancel()

    def cancel_pending(self) -> int:
        """Cancel every future whose item has not started yet; return how many."""
        with self._cond:
            waiting = list(self._waiting)
            if self._on_claim:  # taken but not claimed: still pending (running ones refuse)
                waiting += self._futures.values()
        return sum(1 for f in waiting if f.cancel())

    def close(self) -> None:
        """End the input: the flow finishes once the items already put are done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> Iterator[Any]:
        while True:
            items = self.take(1)
            if not items:
                return
            yield items[0]

    def take(self, n: int) -> list:
        """Return up to `n` items, as many as wait now (block only while none does); [] once closed.

        One lock and one wakeup for all the calls that queued up meanwhile: the
        flow's source reads a Feed in chunks, with no reader thread.
        """
        out: list = []
        with self._cond:
            while not out:
                while not self._heap and not self._closed:
                    self._readers += 1
                    try:
                        self._cond.wait()
                    finally:
                        self._readers -= 1
                if not self._heap:
                    return out
                heap = self._heap
                while heap and len(out) < n:
                    _, _, item, future = heapq.heappop(heap)
                    if future is not None:
                        if future not in self._waiting:
                            continue  # cancelled while it waited: its item is dropped
                        self._waiting.discard(future)
                        if not self._on_claim and not future.set_running_or_notify_cancel():
                            continue  # cancelled just now (that call told its waiters)
                        self._futures[self._taken] = future
                    self._taken += 1
                    out.append(item)
                if self._maxsize:
                    self._cond.notify_all()  # room for blocked put()s
        return out

    def has_futures(self) -> bool:
        """True while some item taken has a Future waiting for its result."""
        return bool(self._futures)  # one len() read: a Future added just after is seen next chunk

    def take_futures(self, indices: list[int], before: int | None = None) -> tuple[dict[int, Future], list[Future]]:
        """Take the Futures of the items at these source indices, and those of items before `before`.

        Returns:
            The Futures found, by index; and the Futures of earlier items (in an
            ordered flow, items that gave no result: a filter dropped them).
        """
        with self._cond:
            found = {}
            for index in indices:
                fut = self._futures.pop(index, None)
                if fut is not None:
                    found[index] = fut
            earlier = []
            if before is not None:
                earlier = [self._futures.pop(i) for i in [i for i in self._futures if i < before]]
        return found, earlier

    def fail_pending(self, why: str, *, taken_gave_none: bool = False) -> None:
        """Fail every Future not resolved yet (the run has ended).

        `taken_gave_none`: the run finished (it did not fail or stop), so an
        item it took and gave no result for was dropped by a filter or skipped
        (``errors="skip"``): its Future gets None, as an ordered flow gives it
        as soon as a later item's result comes out.
        """
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
            self._heap.clear()
            self._closed = True
            taken = list(self._futures.values())
            self._futures.clear()
            self._cond.notify_all()
        for f in waiting:
            if f.set_running_or_notify_cancel():  # False: cancelled meanwhile, and now its waiters know
                f.set_exception(FlowStopped(why))
        for f in taken:
            try:
                if taken_gave_none:
                    f.set_result(None)
                else:
                    f.set_exception(FlowStopped(why))
            except InvalidStateError:
                pass  # resolved meanwhile


def claim(future: Future) -> bool:
    """Mark a taken item's future running as a worker starts it; False: skip the item.

    Idempotent (an item sent again after its worker died is claimed again).
    False means the future was cancelled (its waiters are told by the
    cancel itself) or already failed because the run ended.
    """
    # under the future's own (reentrant) lock, so no cancel() slips between the look and the change
    with future._condition:
        state = future._state
        if state == "PENDING":
            return future.set_running_or_notify_cancel()  # -> RUNNING, True
        return state == "RUNNING"  # cancelled, or failed already: False
