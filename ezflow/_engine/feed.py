"""An open source: items put into a running flow, highest priority first.

    handle.put(item, priority)  --+
    handle.submit(item) -> Future  +--> Feed (heap: priority, then arrival) --iter--> the run's source
    await handle.process(item)  --+                                             (index = order taken)

`Flow()` with no source reads a Feed; `handle.close()` ends it. Items wait
here while the flow is busy, and the waiting ones are taken by priority.
Each item taken gets the next source index; a Future registered for an
item is kept under that index so the handle can resolve it from the
results. When the run ends, every Future still pending fails: nothing
waits forever on a flow that has stopped.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import Future
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
        self.futures: dict[int, Future] = {}

    def put(self, item: Any, priority: int = 0, future: Future | None = None) -> None:
        """Add an item; a larger `priority` is taken sooner. Block while full."""
        with self._cond:
            if self._closed:
                raise RuntimeError("this flow's input is closed: put() after close()")
            while self._maxsize and len(self._heap) >= self._maxsize:
                self._cond.wait()
            heapq.heappush(self._heap, (-priority, next(self._seq), item, future))
            self._cond.notify_all()

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
                while not self._heap and not self._closed:
                    self._cond.wait()
                if not self._heap:
                    return
                _, _, item, future = heapq.heappop(self._heap)
                if future is not None:
                    self.futures[self._taken] = future
                self._taken += 1
                self._cond.notify_all()
            yield item

    def fail_pending(self, why: str) -> None:
        """Fail every Future not resolved yet (the run has ended)."""
        with self._cond:
            waiting = [f for *_, f in self._heap if f is not None]
            self._heap.clear()
            self._closed = True
            taken = list(self.futures.values())
            self.futures.clear()
            self._cond.notify_all()
        for f in waiting + taken:
            if not f.done():
                f.set_exception(FlowStopped(why))
