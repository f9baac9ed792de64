"""Resumable runs: feed a run only the items without a stored result; store results as they are made.

    source --plan: stored segments whose items still match are set aside--> missing items
           (with their source positions) --> Run (stages unchanged) --> chunks
    chunks --CheckpointRun.chunks()--> + stored results merged back in source order --> caller
    last stage --on_done: each part of its output as soon as it is built (before order holds it back)
           \\--Recorder: segments of results --writer thread, one transaction
                                              at most every FLUSH_SECONDS--> Store

A *segment* is a run of consecutive source positions whose results all
arrived, keyed by one digest of their pickled items: what is stored,
matched and reused. Every chunk says which source positions it completes
(`Chunk.span`: a stage emits a chunk's results in parts, each as soon as
it is done, and each part carries its positions, those whose items a
filter dropped included), so what is stored follows what was computed,
not how the source was cut: the last stage hands each part to the
recorder when it is built, and a result that waits for slower ones before
it (ordered) is on disk already. A kill loses what the last write had not
taken yet (about `FLUSH_SECONDS`) and what a worker had not sent back
(at most `items.PARTIAL_SECONDS` of a long piece).

Batch stages merge chunks, and a result's index is its batch's first
item's: a flow with batch stages (all ordered) runs in *prefix mode*: the
results of every position below the newest delivered index are stored as
one segment, and a later run reuses stored segments only as an unbroken
run from position 0 (a changed item, a gap or a failure ends it; all
after it is computed again), so fresh results always follow stored ones.

Failures are not stored unless ``checkpoint_failures=True``: a failed
position ends its segment and is computed again on the next run. Stages
with ``errors="skip"`` run as ``"return"`` under a checkpoint, so a failure
is told apart from a filtered item; it is dropped here and counted as a
skip, as the stage would have done.
"""

from __future__ import annotations

import bisect
import collections
import warnings
from collections.abc import Generator, Iterator
from typing import Any, cast

from .._core.errors import Failure
from .._core.record import replace
from .._core.stats import FlowStats
from .._executors.port import Chunk
from .._plan.spec import StageSpec
from .checkpoint_record import Cut, PrefixCutter, Recorder, cut_chunk, item_error
from .checkpoint_store import CheckpointError, Segment, Store, resolve_path
from .fingerprint import call_key, segment_key
from .run import Run, gather
from .stage import StageDriver

__all__ = ["CheckpointError", "CheckpointOptions", "CheckpointRun", "checkpoint_options"]

MATCHES = ("value", "position")


class CheckpointOptions:
    """Validated ``checkpoint=``, ``checkpoint_match=`` and ``checkpoint_failures=``."""

    __slots__ = ("by_position", "failures", "path")

    def __init__(self, path: Any, by_position: bool, failures: bool) -> None:
        self.path = path
        self.by_position = by_position
        self.failures = failures


def checkpoint_options(checkpoint: Any, match: Any, failures: Any) -> CheckpointOptions | None:
    """Check the checkpoint options at call time; None when there is no checkpoint.

    Raises:
        TypeError, ValueError: an option is invalid, or given without ``checkpoint``.
        CheckpointError: the checkpoint's directory cannot be written.
    """
    if checkpoint is None:
        given = [n for n, v in (("checkpoint_match", match), ("checkpoint_failures", failures)) if v is not None]
        if given:
            raise TypeError(
                f"{' and '.join(given)} only apply with a checkpoint: pass checkpoint='runs/name' too, "
                f"or drop {' and '.join(given)}"
            )
        return None
    if match is None:
        match = "value"
    if match not in MATCHES:
        raise ValueError(
            f"checkpoint_match must be 'value' (items by position and value, the function by its code: "
            f"the default) or 'position' (by position only, whatever the items and the function); got {match!r}"
        )
    if failures is None:
        failures = False
    if not isinstance(failures, bool):
        raise TypeError(f"checkpoint_failures must be True or False, got {failures!r}")
    return CheckpointOptions(resolve_path(checkpoint), match == "position", failures)


def _plan_checks(source: Any, specs: tuple[StageSpec, ...]) -> None:
    if source is None:
        raise TypeError(
            "checkpoint needs a source iterable (it matches items by their position in it); "
            "a flow fed through handle.put() has none"
        )
    merging = [s.name for s in specs if s.kind in ("batch", "unbatch")]
    unordered = [s.name for s in specs if not s.ordered]
    if merging and unordered:
        raise ValueError(
            f"checkpoint with batch stages ({', '.join(merging)}) needs every stage ordered; "
            f"{', '.join(unordered)} has ordered=False: drop it, or checkpoint without the batch"
        )
    if not specs:
        raise ValueError("checkpoint needs a flow with at least one stage")


class CheckpointRun:
    """A `Run` that takes stored results from a checkpoint and stores the new ones.

    It is a `Runner`, as `Run` is: what `Handle`, `collect` and iteration
    use of a run; everything else is the inner run's (``self.run``).
    """

    def __init__(self, source: Any, specs: tuple[StageSpec, ...], observer: Any, options: CheckpointOptions) -> None:
        _plan_checks(source, specs)
        self.options = options
        self.errors = {s.name: s.errors for s in specs}
        self.skip = {s.name for s in specs if s.errors == "skip"}
        specs = tuple(replace(s, errors="return") if s.errors == "skip" else s for s in specs)
        self.ordered = all(s.ordered for s in specs)
        # batch stages merge chunks: results are stored and reused as a prefix of the source
        self.prefix = any(s.kind in ("batch", "unbatch") for s in specs)
        self._cutter = PrefixCutter()  # prefix mode: which delivered results are complete
        self._offset = 0  # prefix mode: the first position fed
        key = call_key([(s.kind, s.fn, s.when, s.size) for s in specs])
        self.store = Store(options.path, key, ",".join(s.kind for s in specs), options.by_position)
        try:
            if self.store.discarded:
                warnings.warn(
                    f"ezflow: checkpoint {str(options.path)!r}: the function (or a stage of the flow) changed "
                    f"since its {self.store.discarded} results were stored; they were discarded and the run "
                    "starts over (pass checkpoint_match='position' to keep results whatever the function)",
                    UserWarning,
                    stacklevel=4,
                )
            stored = [s for s in self.store.load() if self._reusable(s)]
            self._reused: collections.deque[Segment] = collections.deque()
            self._items: dict[int, Any] | None = None  # streamed sources: items kept until stored
            self._source: list | tuple | range | None = None  # an indexable source
            fed, self._fed_pos, reused = self._plan(source, stored)
            self.run = Run(fed, specs, observer, positions=self._positions)
            self.run.from_checkpoint = reused
            segments = self._prefix_segments if self.prefix else self._segments
            self.recorder = Recorder(self.store, segments, self._items_at, not options.by_position)
            last = self.run.drivers[-1]
            if not self.prefix and isinstance(last, StageDriver):
                # results are stored as the last stage makes them, not when order lets them out
                last.on_done = self._record
        except BaseException:
            self.store.close()
            raise

    # -- what is reused ----------------------------------------------------

    def _reusable(self, seg: Segment) -> bool:
        for v in seg.outputs:
            if v.__class__ is Failure and (not self.options.failures or self.errors.get(v.stage) == "raise"):
                return False  # a stored failure comes back only where asked for, and never to raise
        return True

    def _matches(self, seg: Segment, items: list) -> bool:
        if self.options.by_position:
            return True
        return seg.key is not None and seg.key == self._key(items, seg.start)

    def _key(self, items: list, start: int) -> bytes:
        try:
            return segment_key(items)
        except Exception as exc:
            raise item_error(items, start, exc) from exc

    def _plan(self, source: Any, stored: list[Segment]) -> tuple[Any, list | None, int]:
        """Return the items to compute, their positions (None: all, in order) and how many are reused."""
        if isinstance(source, (list, tuple, range)):
            self._source = source
            n = len(source)
            if self.prefix:
                at = 0
                for seg in stored:
                    if seg.start != at or seg.end > n or not self._matches(seg, list(source[seg.start : seg.end])):
                        break
                    self._reused.append(seg)
                    at = seg.end
                self._cutter.open_from = self._offset = at
                return source[at:], None, at
            reused = [s for s in stored if s.end <= n and self._matches(s, list(source[s.start : s.end]))]
            if not reused:
                return source, None, 0
            self._reused.extend(reused)
            missing: list[int] = []
            at = 0
            for s in reused:
                missing.extend(range(at, s.start))
                at = s.end
            missing.extend(range(at, n))
            return [source[p] for p in missing], missing, n - len(missing)
        self._source = None
        if not self.options.by_position:
            self._items = {}
        self._fed_log: list[int] = []
        return _Stream(self, source, stored, self.prefix), self._fed_log, 0

    def _positions(self, index: int, n: int) -> range | list:
        """The engine asks for the source positions of its next source chunk (index: count fed so far)."""
        if self._fed_pos is None:
            return range(self._offset + index, self._offset + index + n)
        return self._fed_pos[index : index + n]

    def _covered(self, span: tuple[int, int]) -> range | list:
        """The positions fed to the run that a delivered chunk completes (those in its span)."""
        lo, hi = span
        fed = self._fed_pos
        if fed is None:
            return range(lo, hi)
        # sorted: a stream's log only grows past the positions of every chunk made so far
        return fed[bisect.bisect_left(fed, lo) : bisect.bisect_left(fed, hi)]

    def _items_at(self, start: int, end: int) -> list:
        if self._source is not None:
            return list(self._source[start:end])
        items = self._items
        if items is None:
            return []
        return [items.pop(p) for p in range(start, end)]

    # -- the run's interface -----------------------------------------------

    @property
    def specs(self) -> tuple[StageSpec, ...]:
        return self.run.specs

    @property
    def state(self) -> str:
        return self.run.state

    def start(self) -> None:
        self.run.start()

    def cancel(self, state: str = "cancelled") -> None:
        self.run.cancel(state)

    def snapshot(self) -> FlowStats:
        return self.run.snapshot()

    @property
    def stop_reason(self) -> str | None:
        return self.run.stop_reason

    def request_stop(self, reason: str) -> None:
        self.run.request_stop(reason)

    def chunks(self) -> Iterator[Chunk]:
        """Yield the results in chunks, stored ones merged in; store the new ones as they come."""
        inner = cast("Generator[Chunk, None, None]", self.run.chunks())  # closing it cancels the run
        recorder = self.recorder
        recorder.start()
        try:
            for chunk in inner:
                if self.ordered and not self.prefix:
                    positions = self._covered(chunk.span)
                    if positions or chunk.idx:
                        yield from self._stored_before(_first(positions, chunk.idx))
                    if self._stored_within(positions, chunk.idx):
                        recorder.check()
                        yield from self._interleave(chunk)  # stored results fall between this chunk's items
                        continue
                else:
                    yield from self._stored_before(None)  # unordered, or with batches: stored results first
                    if self.prefix:
                        recorder.add(chunk, None)
                recorder.check()
                out = self._deliver(chunk)
                if out is not None:
                    yield out
            yield from self._stored_before(None)
            if self.prefix:
                recorder.add(None, None)  # the run ended: every item fed is done
        finally:
            inner.close()
            recorder.close()
        recorder.check()

    def collect(self) -> list:
        return gather(self.chunks())

    def __iter__(self) -> Iterator[Any]:
        for chunk in self.chunks():
            yield from chunk.items

    # -- merging and recording -----------------------------------------------

    def _stored_before(self, position: int | None) -> Iterator[Chunk]:
        reused = self._reused
        while reused and (position is None or reused[0].start < position):
            seg = reused.popleft()
            out = self._deliver(Chunk(0, range(seg.start, seg.start + len(seg.outputs)), seg.outputs, True), True)
            if out is not None:
                yield out

    def _record(self, chunk: Chunk) -> None:
        """The last stage made a part of its output (any thread): store it."""
        self.recorder.add(chunk, self._covered(chunk.span))

    def _stored_within(self, positions: Any, idx: Any) -> bool:
        """Whether a stored segment comes before the last result of a delivered chunk."""
        return bool(self._reused) and self._reused[0].start < _last(positions, idx)

    def _interleave(self, chunk: Chunk) -> Iterator[Chunk]:
        reused = self._reused
        idx: list = []
        items: list = []
        for i, v in zip(chunk.idx, chunk.items, strict=True):
            if reused and reused[0].start < i:
                if items:
                    out = self._deliver(Chunk(chunk.seq, idx, items, chunk.special))
                    if out is not None:
                        yield out
                    idx, items = [], []
                yield from self._stored_before(i)
            idx.append(i)
            items.append(v)
        if items:
            out = self._deliver(Chunk(chunk.seq, idx, items, chunk.special))
            if out is not None:
                yield out

    def _deliver(self, chunk: Chunk, stored: bool = False) -> Chunk | None:
        """Apply errors="skip" (run as "return" under a checkpoint) to a chunk of results."""
        if not chunk.special or not self.skip:
            return chunk if chunk.items else None
        items, idx = [], []
        counters = {c.name: c for c in self.run.counters}
        for i, v in zip(chunk.idx, chunk.items, strict=True):
            if v.__class__ is Failure and v.stage in self.skip:
                c = counters.get(v.stage)
                if c is not None:
                    c.add(errors=0 if stored else -1, skipped=1)
                continue
            items.append(v)
            idx.append(i)
        return Chunk(chunk.seq, idx, items, True) if items else None

    def _prefix_segments(self, chunk: Chunk | None, positions: Any) -> Cut:
        """Prefix mode (flows with batch stages): see `PrefixCutter`; None: the run ended."""
        cutter = self._cutter
        if chunk is not None:
            return cutter.cut(chunk, self.options.failures)
        if self._source is not None:  # every item fed is complete
            return cutter.store_below(len(self._source))
        return cutter.store_below(self._fed_log[-1] + 1) if self._fed_log else ([], [])

    def _segments(self, chunk: Chunk, positions: Any) -> Cut:
        segs, kept, failed = cut_chunk(chunk, positions, self.options.failures)
        if failed and self._items is not None and not self.options.failures:
            for p in failed:
                self._items.pop(p, None)  # a failure is not stored: its item need not be kept
        return segs, kept


def _first(positions: Any, idx: Any) -> int:
    """The first position a delivered chunk completes or has a result for (one of them is not empty)."""
    return min(positions[0] if positions else idx[0], idx[0] if idx else positions[0])


def _last(positions: Any, idx: Any) -> int:
    """The last position a delivered chunk completes or has a result for (-1: none)."""
    return max(positions[-1] if positions else -1, idx[-1] if idx else -1)


class _Stream:
    """A streamed source: set aside the items a stored segment covers, if they still match."""

    def __init__(self, owner: CheckpointRun, source: Any, stored: list[Segment], prefix: bool) -> None:
        self.owner = owner
        self.source = source
        self.stored = stored
        self.prefix = prefix  # reuse only a run of segments from position 0

    def __iter__(self) -> Iterator[Any]:
        owner = self.owner
        log = owner._fed_log
        keep = owner._items
        stored = collections.deque(self.stored)
        it = iter(self.source)
        p = 0

        def note(position: int, item: Any) -> None:  # an item fed to the run: its position, kept for its key
            if not log:
                owner._cutter.open_from = position
            log.append(position)
            if keep is not None:
                keep[position] = item

        while True:
            seg = stored[0] if stored else None
            if self.prefix and seg is not None and seg.start != p:
                stored.clear()  # a gap: the prefix ends here
                seg = None
            if seg is not None and seg.start == p:
                stored.popleft()
                held = []
                for item in it:
                    held.append(item)
                    if len(held) == seg.end - seg.start:
                        break
                if len(held) == seg.end - seg.start and owner._matches(seg, held):
                    owner._reused.append(seg)
                    # this (source) thread is the only writer once the run starts: the stats read one int
                    owner.run.from_checkpoint += len(held)
                    p += len(held)
                    continue
                if self.prefix:
                    stored.clear()
                for item in held:  # changed (or the source ended early): compute them again
                    note(p, item)
                    p += 1
                    yield item
                if len(held) < seg.end - seg.start:
                    return
                continue
            try:
                item = next(it)
            except StopIteration:
                return
            note(p, item)
            p += 1
            yield item
