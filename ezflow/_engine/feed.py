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

__all__ = ["Feed", "FlowStopped"]


class FlowStopped(RuntimeError):
    """The flow ended before this item was processed."""


class Feed:
    """A thread-safe, closable priority queue that a flow reads as its source."""

    def __init__(self, maxsize: int = 0) -> None:
        self._heap: list[tuple[int, int, Any, Future | None]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._maxsize = maxsize
        self._taken = 0
        self._futures: dict[int, Future] = {}  # by source index; the source thread adds, the handle takes
        self._waiting: set[Future] = set()  # futures of items still in the heap, not cancelled
        self._ahead = 0  # > 0: at most this many taken futures unresolved (the rest stay cancellable)
        self._flying: set[Future] = set()  # futures of items taken, not resolved yet

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
            self._cond.notify_all()
        if future is not None:
            future.add_done_callback(self._on_done)

    def limit_ahead(self, n: int) -> None:
        """Take a submitted item only while fewer than `n` taken ones await their result (0: no limit).

        The items left here stay cancellable (``Future.cancel()``), as the
        calls a `concurrent.futures` executor has not queued yet are.
        """
        with self._cond:
            self._ahead = n
            self._cond.notify_all()

    def _on_done(self, future: Future) -> None:
        """A future cancelled while its item waits: tell its waiters now, not when the item comes up."""
        if not future.cancelled():
            with self._cond:
                if future in self._flying:  # a slot ahead is free
                    self._flying.discard(future)
                    self._cond.notify_all()
            return
        with self._cond:
            if future not in self._waiting:
                return  # taken already (it was running: cancel() said no), or failed by fail_pending
            self._waiting.discard(future)
        future.set_running_or_notify_cancel()  # CANCELLED -> CANCELLED_AND_NOTIFIED (returns False)

    def cancel_pending(self) -> int:
        """Cancel every future whose item has not been taken yet; return how many."""
        with self._cond:
            waiting = list(self._waiting)
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
            with self._cond:
                while (not self._heap and not self._closed) or (self._ahead and len(self._flying) >= self._ahead):
                    self._cond.wait()
                if not self._heap:
                    return
                _, _, item, future = heapq.heappop(self._heap)
                self._cond.notify_all()
                if future is not None:
                    if future not in self._waiting:
                        continue  # cancelled while it waited: its item is dropped
                    self._waiting.discard(future)
                    if not future.set_running_or_notify_cancel():
                        continue  # cancelled just now (that call told its waiters)
                    self._flying.add(future)
                    self._futures[self._taken] = future
                self._taken += 1
            yield item

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

    def fail_pending(self, why: str) -> None:
        """Fail every Future not resolved yet (the run has ended)."""
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
                f.set_exception(FlowStopped(why))
            except InvalidStateError:
                pass  # resolved meanwhile
