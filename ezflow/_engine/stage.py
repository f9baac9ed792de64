"""One running stage: take chunks, cut pieces for workers, reassemble, emit.

    inbox --get--> feeder thread --pending chunks--> executor.next_piece() --> workers
                                                                               |
    outbox <--put-- emit in order <-- complete chunk <-- on_result(piece) <----+

A *chunk* is the unit of flow and order: the source numbers them, every
stage emits each input chunk as one output chunk (shorter after a filter,
longer after a flat_map, never merged), so order is kept with one integer
per chunk and no per-item bookkeeping. A *piece* is the unit of dispatch:
cut from a chunk just in time, sized from the measured time per item
(about `TARGET_PIECE_SECONDS` of work), so tiny tasks travel by the
thousand and slow ones one at a time. At most `window` chunks are in a
stage at once: that bounds memory and gives backpressure.
"""

from __future__ import annotations

import collections
import math
import threading
from typing import Any

from .channel import Cancelled, Channel, EndOfStream
from .._core.errors import Failure, TaskError, attach_traceback
from .._plan.spec import StageSpec
from .._core.stats import _Counters

__all__ = ["Chunk", "Piece", "StageDriver", "TARGET_PIECE_SECONDS"]

TARGET_PIECE_SECONDS = {"process": 0.02, "thread": 0.005, "async": 0.0, "dask": 0.2}
# Without a known total, a piece is capped so the first results are not held back too long.
MAX_PIECE_UNKNOWN_TOTAL = 2_000


class Chunk:
    """Items that travel together, with their source indices."""

    __slots__ = ("seq", "idx", "items", "special", "parts", "left", "busy", "made")

    def __init__(self, seq: int, idx: range | list, items: list, special: bool = False) -> None:
        self.seq = seq
        self.idx = idx  # source index of each item: a range until something reorders
        self.items = items
        self.special = special  # may hold Failure records from an earlier stage
        self.parts: list[tuple[int, list, list]] = []
        self.left = len(items)
        self.busy = 0.0
        self.made = 0  # Failure records this stage put in (counted as errors, not out)


class Piece:
    """A slice of a chunk sent to one worker."""

    __slots__ = ("chunk", "start", "items", "isolated", "id", "attempts")

    def __init__(self, chunk: Chunk, start: int, items: list, isolated: bool = False) -> None:
        self.chunk = chunk
        self.start = start
        self.items = items
        self.isolated = isolated  # re-run alone to find which item killed a worker
        self.id = 0
        self.attempts = 0  # tries already used by a lone item the parent gave back (rules.ItemRules.on_lost)

    def split(self, n: int) -> tuple["Piece", "Piece"]:
        """Return the first n items as one piece and the rest as another."""
        head = Piece(self.chunk, self.start, self.items[:n], self.isolated)
        return head, Piece(self.chunk, self.start + n, self.items[n:], self.isolated)


class StageDriver:
    """Runs one stage of a flow between its inbox and outbox channels."""

    def __init__(
        self,
        spec: StageSpec,
        run: Any,
        inbox: Channel,
        outbox: Channel,
        counters: _Counters,
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
        self._pending: collections.deque[list] = collections.deque()  # [chunk, offset]
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
        self._feeder: threading.Thread | None = None
        from .._executors import make_executor

        self.executor = make_executor(spec, self)

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
        if spec.timeout is not None:
            return 1  # a stuck item is stopped by replacing its worker: keep it alone
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
        self._feeder = threading.Thread(
            target=self._feed, name=f"ezflow-feed-{self.spec.name}", daemon=True
        )
        self._feeder.start()

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

    def next_piece(self) -> Piece | None:
        """Wait for the next piece to run; None when this stage has no more work.

        Raises:
            Cancelled: the run was cancelled.
        """
        with self.cond:
            while True:
                if self.cancelled:
                    raise Cancelled
                piece = self.take_piece_locked()
                if piece is not None or self.no_more_work_locked():
                    return piece
                self.cond.wait()

    def take_piece_locked(self) -> Piece | None:
        """Return a piece if one is waiting (hold `cond`)."""
        if self._redo:
            return self._redo.popleft()
        if self._pending:
            return self._cut()
        return None

    def no_more_work_locked(self) -> bool:
        """Return True once the input has ended and every chunk is out (hold `cond`)."""
        return self._input_ended and self._inflight == 0

    def has_work(self) -> bool:
        """Return True if a piece is waiting to be cut."""
        return bool(self._redo or self._pending)

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

    def redo(self, pieces: list[Piece]) -> None:
        """Queue pieces to run again ahead of new work (after a worker died)."""
        with self.cond:
            self.redo_locked(pieces)

    def redo_locked(self, pieces: list[Piece]) -> None:
        """`redo`, for a caller that holds `cond`."""
        self._redo.extendleft(reversed(pieces))
        self.cond.notify_all()

    # -- output side ----------------------------------------------------

    def on_result(self, piece: Piece, values: list, errs: list, busy: float, retries: int = 0) -> None:
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
            if self._finished or self.cancelled or not self.no_more_work_locked():
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
                values = [v for p in parts for v in p[1]]
            return Chunk(chunk.seq, chunk.idx, values, chunk.special)
        c = self.counters
        items = chunk.items
        idx = chunk.idx
        out: list = []
        out_idx: list = []
        special = chunk.special
        made = 0
        for start, values, errs in parts:
            errmap = {e[0]: e for e in errs} if errs else None
            for i, v in enumerate(values):
                p = start + i
                if errmap is not None and i in errmap:
                    _, exc, tb, attempts = errmap[i]
                    c.errors += 1
                    failure = Failure(items[p], idx[p], spec.name, attach_traceback(exc, tb), tb, attempts)
                    if spec.errors == "raise":
                        self.run.abort(TaskError(failure), stage=spec.name)
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
