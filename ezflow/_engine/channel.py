"""Bounded, closable queues of chunks between stages.

    source/stage --put(chunk)--> [ Channel: at most `capacity` chunks ] --get()--> stage/consumer

A full channel blocks its producer: that is how a slow stage slows the
source down and memory stays flat on an endless input. `close()` is a
graceful end (readers drain what is left, then see `EndOfStream`);
`cancel()` wakes every blocked reader and writer at once with `Cancelled`,
which is how an error or Ctrl-C stops a whole run without polling.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from .._core.errors import Cancelled
from .._core.stats import _Counters

__all__ = ["Cancelled", "Channel", "EndOfStream"]


class EndOfStream(Exception):
    """The channel was closed and every chunk has been read."""


class Channel:
    """A bounded FIFO of chunks with graceful close and instant cancel."""

    def __init__(self, capacity: int, counters: _Counters | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._cancelled = False
        # the receiving stage's counters: queue depth is shown for the stage it feeds
        self._counters = counters
        if counters is not None:
            counters.capacity = capacity

    def put(self, chunk: Any, size: int = 0) -> None:
        """Append a chunk of `size` items, waiting while the channel is full."""
        with self._cond:
            if len(self._items) >= self.capacity and not self._cancelled:
                self._wait_for_room()
            if self._cancelled:
                raise Cancelled
            if self._closed:
                raise RuntimeError("put() on a closed channel")
            self._items.append((chunk, size))
            self._account(size)
            self._cond.notify_all()

    def _wait_for_room(self) -> None:
        # Called with the lock held. The receiving stage's counters keep the
        # time its producer spent blocked here: a stage waiting on a full
        # downstream queue is held back, not holding the flow back.
        c = self._counters
        if c is not None:
            c.put_waiters += 1
            if c.full_since is None:
                c.full_since = time.perf_counter()
        try:
            while len(self._items) >= self.capacity and not self._cancelled:
                self._cond.wait()
        finally:
            if c is not None:
                c.put_waiters -= 1
                if c.put_waiters == 0 and c.full_since is not None:
                    c.inbox_full_seconds += time.perf_counter() - c.full_since
                    c.full_since = None

    def get(self, timeout: float | None = None) -> Any:
        """Return the next chunk; None if `timeout` passes first.

        Raises:
            EndOfStream: the channel is closed and empty.
            Cancelled: the run was cancelled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._cancelled:
                    raise Cancelled
                if self._closed:
                    raise EndOfStream
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
            if self._cancelled:
                raise Cancelled
            chunk, size = self._items.popleft()
            self._account(-size)
            self._cond.notify_all()
            return chunk

    def close(self) -> None:
        """End the stream: readers get what is left, then `EndOfStream`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def cancel(self) -> None:
        """Wake every waiter with `Cancelled` and drop what is queued."""
        with self._cond:
            self._cancelled = True
            self._items.clear()
            if self._counters is not None:
                self._counters.queue_depth = 0
                self._counters.queue_chunks = 0
            self._cond.notify_all()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def _account(self, size: int) -> None:
        c = self._counters
        if c is None:
            return
        c.queue_depth += size
        c.queue_chunks = len(self._items)
        c.queue_max = max(c.queue_max, c.queue_depth)
