"""One running stage: take chunks, cut pieces for workers, emit results as they are done.

    inbox --get--> feeder thread --pending chunks--> port.take() --> executor's workers
                                                                        |
    outbox <--put-- emit (in order, if ordered) <-- part of a chunk <-- port.done(piece) <-+

A *chunk* is the unit of flow and order: the source numbers them, and a
stage emits each input chunk's results in order, so order is kept with
one integer per chunk and no per-item bookkeeping. A *piece* is the unit
of dispatch: cut from a chunk just in time, sized from the measured time
per item (about `TARGET_PIECE_SECONDS` of work), so tiny tasks travel by
the thousand and slow ones one at a time. Neither holds a result back:
each piece (or the part of one a worker sends back early) is emitted as
an output chunk of its own as soon as it is done and, in an ordered
stage, every item before it is out. Each output chunk carries the source
positions it completes (`Chunk.span`), which is what a checkpoint stores.
At most `window` input chunks are in a stage at once: that bounds memory
and gives backpressure.

The driver is the `StagePort` of its stage's executor: the executor takes
pieces and reports them through it and never sees the run or the lock.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._core.errors import Cancelled
from .._core.stats import _Counters
from .._core.threads import Job, spawn
from .._executors import Executor, make_executor
from .._executors.port import Chunk, ItemError, Piece
from .._plan.spec import StageSpec
from .channel import Channel, EndOfStream
from .parts import Aborted, build_part

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
        # the figures this driver writes: its stage's; a chain of fused stages (`FusedDriver`) writes
        # each of its stages' (items in to the first, out from the last, each step's busy time)
        self.all_counters: tuple[_Counters, ...] = (counters,)
        self.out_counters = counters
        self.steps: tuple[tuple[str, _Counters], ...] | None = None  # a chain's (name, counters) per step
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
        self._open: dict[int, Chunk] = {}  # ordered: input chunks not yet all emitted, by seq
        self._next_emit = 0
        self._out_seq = 0
        self._per_item: float | None = None
        self._ramp = 1
        self._feeder: Job | None = None
        # called with each part of the output as soon as it is built, before order may hold it
        # back (a checkpoint stores it then: what was computed is kept, whatever came before it)
        self.on_done: Callable[[Chunk], None] | None = None
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
        if spec.start_when_free:
            # ezflow.Executor: the calls waiting are shared out in small parts (as Pool.map's
            # default chunksize), so no call queues in one worker's piece while another has
            # nothing to do, even when calls turn slow after a run of fast ones
            cap = min(cap, math.ceil(self.counters.pending_items / (4 * spec.workers)))
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
                self.counters.add(items_in=len(chunk.items))
                if self.spec.ordered:
                    self._open[chunk.seq] = chunk
                if not chunk.items:
                    self._deliver(chunk, 0, [], ())
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
            for c in self.all_counters:
                with c.lock:  # `set_workers` (the budget) writes it under this lock
                    c.workers = workers  # utilisation is per worker (per cluster thread)
            self.cond.notify_all()

    def wake(self) -> None:
        """The executor's state changed: waiting takers check their room again."""
        with self.cond:
            self.cond.notify_all()

    def report_workers(self, recycled: int = 0, peak_rss: int = 0) -> None:
        """Count workers replaced on purpose; keep the largest worker RSS seen."""
        with self.cond:
            for c in self.all_counters:
                c.workers_recycled += recycled
                c.peak_worker_rss = max(c.peak_worker_rss, peak_rss)

    def worker_up(self, worker: int, pid: int | None = None, startup: float = 0.0) -> None:
        """A worker is ready (insights)."""
        for c in self.all_counters:
            c.book.up(worker, pid, startup)

    def began(self, worker: int, piece: Piece) -> None:
        """A worker starts a piece (insights: its current item and age)."""
        self.counters.book.began(worker, piece.chunk.idx[piece.start])

    def worker_gone(self, worker: int) -> None:
        """A worker was replaced (insights)."""
        for c in self.all_counters:
            c.book.gone(worker)

    def set_workers(self, n: int) -> None:
        """The stage runs `n` workers from now on (the CPU budget moved some): say so in its figures."""
        for c in self.all_counters:
            c.set_workers(n)

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
        idx = chunk.idx
        if not isinstance(idx, range):
            # one item's results from a flat_map travel together: a checkpoint stores them only so
            while end < len(idx) and idx[end] == idx[end - 1]:
                end += 1
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
        busy: float | tuple[float, ...],
        retries: int = 0,
        worker: int | None = None,
    ) -> None:
        """Record a finished piece (or the first part of one); emit its results as soon as order allows.

        A chain of fused stages (`FusedDriver`) writes each stage's figures: `busy` comes
        step by step; an item that failed at a step reaches no later one, but with
        errors="return" (its `Failure` passes on, as between separate stages).
        """
        counters = self.all_counters
        last = len(counters) - 1
        # one figure: a single stage's, or a chain's piece the parent failed (a dead worker)
        spent = busy if isinstance(busy, tuple) else (busy,) + (0.0,) * last
        reached = [len(piece.items)] * len(counters)  # items that reached each step
        if last:
            failed = [0] * len(counters)
            for e in errs:
                failed[e.step] += 1
            n = len(piece.items)
            for k, c in enumerate(counters):
                reached[k] = n
                if k:
                    c.start()
                    c.add(items_in=n)
                if k < last:
                    c.add(items_out=n - failed[k])  # the last stage's: when its output is emitted
                if self.spec.errors != "return":
                    n -= failed[k]
        chunk = piece.chunk
        first = chunk.idx[piece.start]
        with self.cond:
            for k, c in enumerate(counters):
                c.items_done += reached[k]
                c.busy_seconds += spent[k]
            counters[0].retries += retries
            total = sum(spent)
            if total > 0 and not errs:
                self._measure(len(piece.items), total)
        for k, c in enumerate(counters):
            c.book.done(worker, first, piece.items, spent[k])
        self._deliver(chunk, piece.start, values, errs)

    def _deliver(self, chunk: Chunk, start: int, values: list[Any], errs: Sequence[ItemError]) -> None:
        try:
            out = build_part(self.spec, self.counters, self.run.abort, chunk, start, values, errs, self.steps)
        except Aborted:
            return
        if self.on_done is not None:
            self.on_done(out)
        try:
            with self._emit_lock:
                if self.spec.ordered:
                    chunk.parts[start] = (len(values), out)
                    self._emit_in_order()
                else:
                    self._emit(out)
                    self._emitted(chunk, len(values))
        except Cancelled:
            return
        self._maybe_finish()

    def _emit_in_order(self) -> None:
        # Called with the emit lock held: emit the done parts that follow what went out.
        while True:
            head = self._open.get(self._next_emit)
            if head is None:
                return
            part = head.parts.pop(head.emitted, None)
            if part is None:
                return
            self._emit(part[1])
            if self._emitted(head, part[0]):
                del self._open[self._next_emit]
                self._next_emit += 1

    def _emitted(self, chunk: Chunk, n: int) -> bool:
        """Count n items of `chunk` as emitted; True (and a free window slot) once all are."""
        chunk.emitted += n
        if chunk.emitted < len(chunk.items):
            return False
        with self.cond:
            self._inflight -= 1
            self.cond.notify_all()
        return True

    def _emit(self, out: Chunk) -> None:
        out.seq = self._out_seq
        self._out_seq += 1
        self.outbox.put(out, len(out.items))
        self.out_counters.add(items_out=len(out.items) - out.made)

    def _maybe_finish(self) -> None:
        with self.cond:
            if self._finished or self.cancelled or not self._no_more_work_locked():
                return
            self._finished = True
            self.cond.notify_all()
        for c in self.all_counters:
            c.start()
            c.finish("done")
        self.executor.close()
        self.outbox.close()

    # -- ending -----------------------------------------------------------

    def cancel(self) -> None:
        """Stop at once: wake every waiter and stop the workers."""
        with self.cond:
            self.cancelled = True
            self.cond.notify_all()
        self.executor.cancel()
