"""A stage's insights: each worker's time, the slowest pieces, every failure (capped).

    executor threads (parent) --up / began / done / gone-->  Book (one per stage, a leaf lock)
    stage driver, failed item  --failed------------------->    |  snapshot(now)
                                                               v
    StageStats.worker_stats / .slowest / .failures  (frozen records, read by every view)

Everything is gathered in the parent from timestamps it takes anyway: when
a piece starts on a worker and when its result comes back, plus the busy
seconds the worker measured for the whole piece. Nothing is timed per item
in a worker: a piece of a thousand tiny items is one entry among the
slowest, with its item count. The slowest are a heap of `SLOWEST` entries,
and an entry's input repr is made only when it enters the heap.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
import time
from typing import Any

from .errors import short_repr
from .record import record

__all__ = ["FAILURES_KEPT", "SLOWEST", "TEXT_KEPT", "Book", "FailedItem", "SlowItem", "WorkerStats"]

SLOWEST = 5  # pieces kept per stage, slowest first
FAILURES_KEPT = 100  # failures kept with their full text per stage; later ones are only counted
TEXT_KEPT = 20_000  # characters of a failure's message or traceback kept (its start and its end)
GONE_KEPT = 32  # records of workers that were replaced (recycled, died, timed out) kept per stage


@record(frozen=True)
class WorkerStats:
    """One worker of a stage: where its time went, and what it is running now."""

    id: int  # its number in the stage, from 0; a replacement worker gets a new one
    pid: int | None  # its process id (process workers); None for threads and async tasks
    startup_s: float  # seconds from the stage's start (or its own, for a replacement) until it could take items
    busy_s: float  # seconds spent computing finished pieces (as the worker measured them)
    waiting_s: float  # seconds ready but not computing: waiting for work, or moving items and results
    items: int  # items it finished
    current_item: int | None  # source index of the item it runs now (a piece's first), None when idle
    current_for_s: float  # seconds it has been running that item (that piece) so far
    alive: bool = True  # False once it was replaced (recycled, died, timed out); its clock stopped then


@record(frozen=True)
class SlowItem:
    """One of a stage's slowest items (or pieces of tiny items timed together)."""

    index: int  # source index of the item (a piece's first)
    seconds: float  # compute time of the item (of the whole piece when ``items`` > 1)
    input: str  # a short repr of the item's input (~60 characters)
    items: int = 1  # items timed together in this entry


@record(frozen=True)
class FailedItem:
    """One failed item of a stage: what went in, what was raised, and where."""

    index: int  # source index of the item
    input: str  # a short repr of the item's input (~60 characters)
    error: str  # the exception's type name, e.g. "ValueError"
    message: str  # the exception's message
    traceback: str  # the traceback text from the worker ("" when there is none)

    def __repr__(self) -> str:
        # the traceback is the long part: a list of a hundred failures must stay readable
        lines = len(self.traceback.splitlines())
        return (
            f"FailedItem(index={self.index!r}, input={self.input!r}, error={self.error!r}, "
            f"message={self.message!r}, traceback=<{lines} lines>)"
        )


def _cut(text: str) -> str:
    # a deep recursion's traceback can be megabytes: keep where it starts and where it failed
    if len(text) <= TEXT_KEPT:
        return text
    head = TEXT_KEPT // 5
    return f"{text[:head]}\n[... {len(text) - TEXT_KEPT:,} characters cut ...]\n{text[-(TEXT_KEPT - head):]}"


def _by_index(f: FailedItem) -> int:
    return f.index


class _Worker:
    __slots__ = ("alive", "busy", "current", "ended", "id", "items", "pid", "ready", "since", "startup")

    def __init__(self, wid: int, pid: int | None, startup: float, ready: float) -> None:
        self.id = wid
        self.pid = pid
        self.startup = startup
        self.ready = ready
        self.busy = 0.0
        self.items = 0
        self.current: int | None = None
        self.since = 0.0
        self.alive = True
        self.ended = 0.0


class Book:
    """Per-stage insights, written by the parent's executor threads; `snapshot` reads them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a leaf lock: nothing else is taken while it is held
        self._workers: dict[int, _Worker] = {}
        self._gone: list[int] = []
        self._slow: list[tuple[float, int, int, int, str]] = []  # (seconds, tiebreak, index, items, input)
        self._seq = itertools.count()
        self._failures: list[FailedItem] = []
        self.failures_omitted = 0

    def up(self, worker: int, pid: int | None, startup: float) -> None:
        """Worker `worker` is ready to take items after `startup` seconds."""
        with self._lock:
            self._workers[worker] = _Worker(worker, pid, max(0.0, startup), time.perf_counter())

    def began(self, worker: int, index: int) -> None:
        """Worker `worker` started a piece whose first item has source index `index`."""
        with self._lock:
            w = self._workers.get(worker)
            if w is not None:
                w.since = time.perf_counter()
                w.current = index

    def done(self, worker: int | None, index: int, items: list[Any], busy: float) -> None:
        """A piece (first item at source `index`) came back after `busy` seconds of work on `worker`."""
        with self._lock:
            w = self._workers.get(worker) if worker is not None else None
            if w is not None:
                w.busy += busy
                w.items += len(items)
                if w.current == index:
                    w.current = None
            heap = self._slow
            if busy > 0 and (len(heap) < SLOWEST or busy > heap[0][0]):
                entry = (busy, next(self._seq), index, len(items), short_repr(items[0]) if items else "")
                if len(heap) < SLOWEST:
                    heapq.heappush(heap, entry)
                else:
                    heapq.heapreplace(heap, entry)

    def gone(self, worker: int) -> None:
        """Worker `worker` was replaced or stopped: its figures stay, frozen, among a few such."""
        with self._lock:
            w = self._workers.get(worker)
            if w is None or not w.alive:
                return
            w.alive = False
            w.current = None
            w.ended = time.perf_counter()
            self._gone.append(worker)
            if len(self._gone) > GONE_KEPT:
                del self._workers[self._gone.pop(0)]

    def failed(self, index: int, item: Any, error: BaseException, traceback: str) -> None:
        """Item `item` (source `index`) failed with `error`: keep it, or only count it past `FAILURES_KEPT`."""
        with self._lock:
            if len(self._failures) >= FAILURES_KEPT:
                self.failures_omitted += 1
                return
        try:
            message = str(error)
        except BaseException:  # an item's odd exception must not hide the report of it
            message = "<message could not be read>"
        entry = FailedItem(index, short_repr(item), type(error).__name__, _cut(message), _cut(traceback or ""))
        with self._lock:
            if len(self._failures) < FAILURES_KEPT:
                bisect.insort(self._failures, entry, key=_by_index)  # listed in source order, not arrival
            else:
                self.failures_omitted += 1

    def snapshot(self, end: float) -> dict[str, Any]:
        """Return the stage's insights as `StageStats` fields, with the clock stopped at `end`."""
        with self._lock:
            workers = tuple(self._worker_stats(w, end) for w in self._workers.values())
            slowest = tuple(SlowItem(e[2], e[0], e[4], e[3]) for e in sorted(self._slow, reverse=True))
            failures = tuple(self._failures)
            omitted = self.failures_omitted
        return {"worker_stats": workers, "slowest": slowest, "failures": failures, "failures_omitted": omitted}

    @staticmethod
    def _worker_stats(w: _Worker, end: float) -> WorkerStats:
        stop = end if w.alive else min(end, w.ended)
        current = w.current
        running = max(0.0, stop - w.since) if current is not None else 0.0
        waiting = max(0.0, stop - w.ready - w.busy - running)
        return WorkerStats(w.id, w.pid, w.startup, w.busy, waiting, w.items, current, running, w.alive)
