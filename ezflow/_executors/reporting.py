"""A piece's results sent back while it runs: in parts on a clock, or each as it finishes.

    run_piece(rt, items, report=...)          what a worker calls for a piece
      short piece / time limit  -> items.run_items          (one answer)
      report_each stage         -> _run_flushed              each result within FLUSH_SECONDS
      plain map                 -> _fast_map_reporting       blocks, a report every PARTIAL_SECONDS
      with rules                -> blocks of items.run_items a report every PARTIAL_SECONDS

Blocks are sized by `next_block` so a piece as fast as its cut looks at the
clock once; a piece of slow items comes back item by item.
"""

from __future__ import annotations

import itertools
import os
import threading
import time

from .items import PARTIAL_SECONDS, Report, Runtime, error_at, item_failed, run_items

__all__ = ["FLUSH_SECONDS", "next_block", "run_piece"]

# A `report_each` stage's finished result waits at most about this long for the rest of its piece.
FLUSH_SECONDS = 0.002


def run_piece(
    rt: Runtime, items: list, special: bool, tried: int = 0, report: Report | None = None
) -> tuple[list, list, float, int]:
    """Apply the stage to every item; return (values, errs, busy_seconds, retries).

    ``special`` says the piece may hold pass-through items, or the stage has
    rules (when, retries, a rate limit) that need the per-item path.
    ``report(values, errs, busy, retries)``, if given, is called with the
    results of the items done so far once `PARTIAL_SECONDS` passed since the
    piece started or since the last report: a piece of slow items comes back
    item by item, however it was cut. What is returned is then the rest.
    Not with a time limit in a process worker (``rt.marker``): the parent
    reads item positions in the piece as it sent it.
    """
    if report is None or len(items) < 2 or rt.marker is not None:
        return run_items(rt, items, special, tried)
    if rt.report_after <= 0:
        return _run_flushed(rt, items, special, tried, report)
    if rt.kind == "map" and not rt.rules.retries and rt.when is None and rt.limiter is None and not special:
        return _fast_map_reporting(rt, items, report)
    # Items run in blocks that end about when the next report is due (see `next_block`).
    n = len(items)
    every = rt.report_after
    t0 = last = time.perf_counter()
    values: list = []
    errs: list = []
    retried = 0
    done = base = 0  # items run; the first one not yet reported
    block = 1
    while done < n:
        end = min(n, done + block)
        v, e, _, r = run_items(rt, items[done:end], special, tried)
        if e:
            shift = done - base
            errs.extend(x._replace(pos=x.pos + shift) for x in e)
        values += v
        retried += r
        done = end
        now = time.perf_counter()
        if done < n and now - last >= every:
            report(values, errs, now - last, retried)
            values, errs, retried = [], [], 0
            base, last = done, now
        block = next_block(block, now - t0, done, n, every)
    return values, errs, time.perf_counter() - last, retried


class _Flusher:
    """A piece's finished results, sent back by `_FLUSH` once they waited `FLUSH_SECONDS`.

    The thread running the piece only appends (no message, no clock per
    item): tiny calls go back with their piece, and a call that finished
    never waits long for a slow one after it in the same piece.
    """

    __slots__ = ("errs", "first_at", "lock", "report", "retried", "since", "stopped", "values")

    def __init__(self, report: Report) -> None:
        self.report = report
        self.lock = threading.Lock()
        self.values: list = []
        self.errs: list = []
        self.retried = 0
        self.first_at = 0.0  # when the oldest unreported result finished
        self.since = time.perf_counter()  # start of the busy time not reported yet
        self.stopped = False

    def add(self, v: list, e: list, r: int) -> None:
        with self.lock:
            if not self.values:
                self.first_at = time.perf_counter()
            if e:
                shift = len(self.values)
                self.errs.extend(x._replace(pos=x.pos + shift) for x in e)
            self.values += v
            self.retried += r

    def take(self) -> tuple[list, list, float, int]:
        # under self.lock
        now = time.perf_counter()
        out = (self.values, self.errs, now - self.since, self.retried)
        self.values, self.errs, self.retried, self.since = [], [], 0, now
        return out

    def flush_if_due(self, now: float) -> None:
        with self.lock:
            if self.values and not self.stopped and now - self.first_at >= FLUSH_SECONDS:
                self.report(*self.take())  # under the lock: the piece's last answer goes after it

    def finish(self) -> tuple[list, list, float, int]:
        with self.lock:
            self.stopped = True
            return self.take()


class _FlushService:
    """One thread per process that looks at the running `_Flusher`s every `FLUSH_SECONDS` (none: it sleeps)."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.active: set[_Flusher] = set()
        self.pid = 0  # the process whose thread serves (a forked worker starts its own)

    def add(self, flusher: _Flusher) -> None:
        with self.cond:
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self._serve, name="ezflow-flush", daemon=True).start()
            self.active.add(flusher)
            if len(self.active) == 1:
                self.cond.notify()

    def remove(self, flusher: _Flusher) -> None:
        with self.cond:
            self.active.discard(flusher)

    def _serve(self) -> None:
        while True:
            with self.cond:
                while not self.active:
                    self.cond.wait()
            time.sleep(FLUSH_SECONDS)
            with self.cond:
                looking = list(self.active)
            now = time.perf_counter()
            for flusher in looking:
                flusher.flush_if_due(now)


_FLUSH = _FlushService()


def _run_flushed(rt: Runtime, items: list, special: bool, tried: int, report: Report) -> tuple[list, list, float, int]:
    flusher = _Flusher(report)
    lock = flusher.lock
    _FLUSH.add(flusher)
    try:
        if rt.kind == "map" and not rt.rules.retries and rt.when is None and rt.limiter is None and not special:
            call = rt.call  # as `_fast_map`, one item at a time, each result handed over at once
            for item in items:
                try:
                    value = call(item)
                    failed = None
                except BaseException as exc:
                    if not item_failed(exc):
                        raise
                    value, failed = None, exc
                with lock:
                    values = flusher.values
                    if not values:
                        flusher.first_at = time.perf_counter()
                    if failed is not None:
                        flusher.errs.append(error_at(rt, failed, 1, len(values)))
                    values.append(value)
        else:
            for i in range(len(items)):
                v, e, _, r = run_items(rt, items[i : i + 1], special, tried)
                flusher.add(v, e, r)
    finally:
        _FLUSH.remove(flusher)
    return flusher.finish()


def next_block(block: int, spent: float, done: int, n: int, every: float = PARTIAL_SECONDS) -> int:
    """How many items to run before looking at the clock again.

    All the rest when, at the pace so far, they take less than
    `PARTIAL_SECONDS` (a piece as fast as its size was cut for: one look at
    the clock after its first item); else enough to end about when the next
    report is due, growing at most 4x a block, so items that turn slow are
    noticed after about as many items as ran so far.
    """
    if every <= 0:
        return 1  # every result on its own
    per = spent / done
    if per * (n - done) <= every:
        return n - done
    return max(1, min(4 * block, int(every / per)))


def _fast_map_reporting(rt: Runtime, items: list, report: Report) -> tuple[list, list, float, int]:
    # `_fast_map` in blocks, on one iterator and one list: nothing is copied per item,
    # and a piece as fast as expected runs as one block after its first item.
    n = len(items)
    every = rt.report_after
    call = rt.call
    it = iter(items)
    values: list = []
    errs: list = []
    append = values.append
    t0 = last = time.perf_counter()
    done = 0
    block = 1
    while done < n:
        stop = min(n, done + block)
        src = it if stop == n else itertools.islice(it, stop - done)
        while True:
            try:
                for item in src:
                    append(call(item))
                break
            except BaseException as exc:  # the item fails; the same iterator resumes with the next
                if not item_failed(exc):
                    raise
                errs.append(error_at(rt, exc, 1, len(values)))
                append(None)
        done = stop
        now = time.perf_counter()
        if done < n and now - last >= every:
            report(values, errs, now - last, 0)
            values, errs = [], []
            append = values.append
            last = now
        if done < n:
            block = next_block(block, now - t0, done, n, every)
    return values, errs, time.perf_counter() - last, 0
