"""One running stage: take chunks, cut pieces for workers, reassemble, emit.

    inbox --get--> feeder thread --pending chunks--> port.take() --> executor's workers
                                                                        |
    outbox <--put-- emit in order <-- complete chunk <-- port.done(piece) <-+

A *chunk* is the unit of flow and order: the source numbers them, every
stage emits each input chunk as one output chunk (shorter after a filter,
longer after a flat_map, never merged), so order is kept with one integer
per chunk and no per-item bookkeeping. A *piece* is the unit of dispatch:
cut from a chunk just in time, sized from the measured time per item
(about `TARGET_PIECE_SECONDS` of work), so tiny tasks travel by the
thousand and slow ones one at a time. At most `window` chunks are in a
stage at once: that bounds memory and gives backpressure.

The driver is the `StagePort` of its stage's executor: the executor takes
pieces and reports them through it and never sees the run or the lock.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._core.errors import Cancelled, Failure, MemoryLimitExceeded, attach_traceback
from .._core.stats import _Counters
from .._core.threads import Job, spawn
from .._executors import Executor, make_executor
from .._executors.port import Chunk, ItemError, Piece
from .._plan.spec import StageSpec
from .channel import Channel, EndOfStream

__all__ = ["TARGET_PIECE_SECONDS", "Aborter", "StageDriver"]

TARGET_PIECE_SECONDS = {"process": 0.02, "thread": 0.005, "async": 0.0, "dask": 0.2}
# Without a known total, a piece is capped so the first results are not held back too long.
MAX_PIECE_UNKNOWN_TOTAL = 2_000


class Aborter(Protocol):
    """What a stage needs of its run: a way to fail it."""

    def abort(self, exc: BaseException, stage: str | None = None, late: bool = False) -> None: ...


class StageDriver:
    """Runs one stage of a flow between its inbox and outbox channels (the executor's `StagePort`)."""

    def __init__(
        self,
        spec: StageSpec,
        run: Aborter,
        inbox: Channel,
        outbox: Channel,
        counters: _Counters,
        *,
        total: int | None,
    ) -> None:
        self.spec = spec
        self.run = run
        self.inbox = inbox
        self.outbox = outbox
        self.counters = counters
        self.total = total
        self.window = 2 * spec.workers + 2
        counters.window = self.window
        self.cond = threading.Condition(threading.Lock())
        self._pending: collections.deque[list[Any]] = collections.deque()  # [chunk, offset]
        self._redo: collections.deque[Piece] = collections.deque()
        self._inflight = 0  # chunks taken and not yet emitted
        self._input_ended = False
        self.cancelled = False
        self._finished = False
        self._emit_lock = threading.Lock()
        self._ready: dict[int, Chunk] = {}
        self._next_emit = 0
        self._out_seq = 0
        self._per_item: float | None = None
        self._ramp = 1
        self._feeder: Job | None = None
        self.executor: Executor = make_executor(spec, self)

    # -- sizing ---------------------------------------------------------

    def piece_size(self) -> int:
        """Return how many items the next piece should hold."""
        spec = self.spec
        if spec.chunksize is not None:
            return spec.chunksize
        if spec.mode == "async":
            return 1  # concurrency comes from awaiting many single items at once
        if spec.rate is not None:
            return 1  # the limit counts calls: pace them one by one
        if spec.item_timeout is not None and spec.mode != "process":
            # a stuck thread cannot be stopped, only left behind: alone. (A process worker
            # marks each item it starts, and is stopped only for the one that overran.)
            return 1
        if self._per_item is None:
            return 1  # measure before batching: a slow item must not be hoarded by one worker
        target = TARGET_PIECE_SECONDS.get(spec.mode, 0.02)
        size = int(target / self._per_item) if self._per_item > 0 else MAX_PIECE_UNKNOWN_TOTAL
        if self.total is not None:
            cap = max(1, math.ceil(self.total / (4 * spec.workers)))
            if self._per_item * self.total <= target * spec.workers:
                cap = math.ceil(self.total / spec.workers)  # a few pieces' worth in all: no tail to balance
        else:
            cap = MAX_PIECE_UNKNOWN_TOTAL
        return max(1, min(size, cap))

    def suggest_chunk(self) -> int:
        """Return a source chunk size that keeps every worker of this stage fed."""
        if self.spec.mode == "inline":
            return 64
        if self.spec.mode == "async":
            return self.spec.workers
        if self.spec.chunksize == 1 and not self.spec.ordered:
            return 1  # one item per chunk: each result is delivered when it is done (ezflow.Executor's calls)
        if self.spec.chunksize is None and self._per_item is None:
            # nothing measured yet: grow the source's chunks 1, 2, 4... (pieces stay single)
            self._ramp = min(self._ramp * 2, 256)
            return self._ramp // 2
        return max(1, self.piece_size() * self.spec.workers)

    def _measure(self, n: int, busy: float) -> None:
        if n <= 0:
            return
        per = busy / n
        if self._per_item is None:
            self._per_item = per
        else:
            self._per_item = 0.7 * self._per_item + 0.3 * per

    # -- input side -----------------------------------------------------

    def start(self) -> None:
        """Start the feeder thread (the executor must be set up already)."""
        self._feeder = spawn(self._feed, f"ezflow-feed-{self.spec.name}")

    def _feed(self) -> None:
        try:
            while True:
                with self.cond:
                    while self._inflight >= self.window and not self.cancelled:
                        self.cond.wait()
                    if self.cancelled:
                        return
                    self._inflight += 1
                try:
                    chunk = self.inbox.get()
                except EndOfStream:
                    with self.cond:
                        self._inflight -= 1
                        self._input_ended = True
                        self.cond.notify_all()
                    break
                self.counters.start()
                self.counters.items_in += len(chunk.items)
                if not chunk.items:
                    self._complete(chunk)
                    continue
                with self.cond:
                    self._pending.append([chunk, 0])
                    self.counters.pending_items += len(chunk.items)
                    self.counters.pending_chunks = len(self._pending)
                    self.cond.notify_all()
            self._maybe_finish()
        except Cancelled:
            return
        except BaseException as exc:  # a bug here must fail the run, not hang it
            self.run.abort(exc)

    # -- the executor's port ---------------------------------------------------

    def take(self, room: Callable[[], bool] | None = None) -> Piece | None:
        """Wait for a piece the executor has `room` for; None when this stage has no more work.

        Raises:
            Cancelled: the run was cancelled.
        """
        with self.cond:
            while True:
                if self.cancelled:
                    raise Cancelled
                if room is None or room():
                    piece = self._take_locked()
                    if piece is not None:
                        return piece
                if self._no_more_work_locked():
                    return None
                self.cond.wait()

    def give_back(self, pieces: Sequence[Piece]) -> None:
        """Queue pieces to run again ahead of new work (after a worker died)."""
        with self.cond:
            self._redo.extendleft(reversed(pieces))
            self.cond.notify_all()

    def fail(self, exc: BaseException, *, late: bool = False, blame: bool = False) -> None:
        """Fail the run (a bug or a setup failure in the executor)."""
        self.run.abort(exc, stage=self.spec.name if blame else None, late=late)

    def set_capacity(self, workers: int, pieces: int) -> None:
        """The executor runs `workers` items at once and wants `pieces` in flight."""
        with self.cond:
            # The window of chunks is sized from `workers`, which means this
            # machine's CPUs for a dask stage: let a larger cluster have enough
            # chunks to cut `pieces` pieces from.
            self.window = max(self.window, pieces)
            self.counters.workers = workers  # utilisation is per worker (per cluster thread)
            self.cond.notify_all()

    def wake(self) -> None:
        """The executor's state changed: waiting takers check their room again."""
        with self.cond:
            self.cond.notify_all()

    def report_workers(self, recycled: int = 0, peak_rss: int = 0) -> None:
        """Count workers replaced on purpose; keep the largest worker RSS seen."""
        c = self.counters
        with self.cond:
            c.workers_recycled += recycled
            c.peak_worker_rss = max(c.peak_worker_rss, peak_rss)

    def worker_up(self, worker: int, pid: int | None = None, startup: float = 0.0) -> None:
        """A worker is ready (insights)."""
        self.counters.book.up(worker, pid, startup)

    def began(self, worker: int, piece: Piece) -> None:
        """A worker starts a piece (insights: its current item and age)."""
        self.counters.book.began(worker, piece.chunk.idx[piece.start])

    def worker_gone(self, worker: int) -> None:
        """A worker was replaced (insights)."""
        self.counters.book.gone(worker)

    def _take_locked(self) -> Piece | None:
        if self._redo:
            return self._redo.popleft()
        if self._pending:
            return self._cut()
        return None

    def _no_more_work_locked(self) -> bool:
        return self._input_ended and self._inflight == 0

    def _cut(self) -> Piece:
        entry = self._pending[0]
        chunk, offset = entry
        size = self.piece_size()
        end = min(len(chunk.items), offset + size)
        if offset == 0 and end == len(chunk.items):
            items = chunk.items
        else:
            items = chunk.items[offset:end]
        piece = Piece(chunk, offset, items)
        if end >= len(chunk.items):
            self._pending.popleft()
        else:
            entry[1] = end
        self.counters.pending_items -= len(items)
        self.counters.pending_chunks = len(self._pending)
        return piece

    # -- output side ----------------------------------------------------

    def done(
        self,
        piece: Piece,
        values: list[Any],
        errs: Sequence[ItemError],
        busy: float,
        retries: int = 0,
        worker: int | None = None,
    ) -> None:
        """Record a finished piece; emit its chunk once every piece is back."""
        chunk = piece.chunk
        n = len(piece.items)
        c = self.counters
        with self.cond:
            chunk.parts.append((piece.start, values, errs))
            chunk.left -= n
            chunk.busy += busy
            complete = chunk.left == 0
            c.items_done += n
            c.busy_seconds += busy
            c.retries += retries
            if busy > 0 and not errs:
                self._measure(n, busy)
        c.book.done(worker, chunk.idx[piece.start], piece.items, busy)
        if complete:
            self._complete(chunk)

    def _complete(self, chunk: Chunk) -> None:
        try:
            out = self._build(chunk)
        except _Abort:
            return
        try:
            with self._emit_lock:
                if not self.spec.ordered:
                    self._emit(out)
                else:
                    self._ready[chunk.seq] = out
                    while self._next_emit in self._ready:
                        ready = self._ready.pop(self._next_emit)
                        self._next_emit += 1
                        self._emit(ready)
        except Cancelled:
            return
        self._maybe_finish()

    def _emit(self, out: Chunk) -> None:
        out.seq = self._out_seq
        self._out_seq += 1
        self.outbox.put(out, len(out.items))
        self.counters.items_out += len(out.items) - out.made
        with self.cond:
            self._inflight -= 1
            self.cond.notify_all()

    def _maybe_finish(self) -> None:
        with self.cond:
            if self._finished or self.cancelled or not self._no_more_work_locked():
                return
            self._finished = True
            self.cond.notify_all()
        self.counters.start()
        self.counters.finish("done")
        self.executor.close()
        self.outbox.close()

    def _build(self, chunk: Chunk) -> Chunk:
        spec = self.spec
        kind = spec.kind
        parts = chunk.parts
        if len(parts) > 1:
            parts.sort(key=lambda p: p[0])
        if kind == "map" and not any(p[2] for p in parts):
            if len(parts) == 1:
                values = parts[0][1]
            else:
                # list.extend copies in C; a comprehension ran Python bytecode per item (W1: ~2% of the parent)
                values = []
                for part in parts:
                    values.extend(part[1])
            return Chunk(chunk.seq, chunk.idx, values, chunk.special)
        c = self.counters
        items = chunk.items
        idx = chunk.idx
        out: list = []
        out_idx: list = []
        special = chunk.special
        made = 0
        for start, values, errs in parts:
            errmap = {e.pos: e for e in errs} if errs else None
            for i, v in enumerate(values):
                p = start + i
                if errmap is not None and i in errmap:
                    err = errmap[i]
                    exc, tb = err.error, err.tb
                    c.book.failed(idx[p], items[p], exc, tb)
                    c.errors += 1
                    if isinstance(exc, MemoryLimitExceeded):
                        c.memory_failures += 1
                    failure = Failure(items[p], idx[p], spec.name, attach_traceback(exc, tb), tb, err.attempts)
                    if spec.errors == "raise":
                        self.run.abort(failure.to_error(), stage=spec.name)
                        raise _Abort
                    if spec.errors == "skip":
                        c.errors -= 1
                        c.skipped += 1
                        continue
                    out.append(failure)
                    out_idx.append(idx[p])
                    special = True
                    made += 1
                elif kind == "map":
                    out.append(v)
                    out_idx.append(idx[p])
                elif kind == "filter":
                    if v:
                        out.append(items[p])
                        out_idx.append(idx[p])
                    else:
                        c.filtered += 1
                else:  # flat_map
                    out.extend(v)
                    out_idx.extend([idx[p]] * len(v))
        result = Chunk(chunk.seq, out_idx, out, special)
        result.made = made
        return result

    # -- ending -----------------------------------------------------------

    def cancel(self) -> None:
        """Stop at once: wake every waiter and stop the workers."""
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()
        self.executor.cancel()


class _Abort(Exception):
    """The run was aborted while a chunk was being assembled."""
