"""Writing a checkpoint: cut the last stage's output into segments; one writer thread stores them.

    last stage's threads: Recorder.add(chunk, positions)  --pending-->  writer thread
    writer thread:   cut into segments, key each one's items, pickle the results (as they come);
                     insert the rows prepared so far in one transaction, at most every FLUSH_SECONDS

`add` only appends to a list: cutting, keying, pickling and the write all
happen in the writer, so a run of tiny items does not wait on them, and a
run of slow ones has its results on disk half a second after they are
made. Closing writes what is pending; the writer then closes the file on
its own (SQLite folds the WAL back in, a few ms of fsync the caller does
not wait for: the rows are committed already).
"""

from __future__ import annotations

import bisect
import pickle
import sys
import threading
import time
from array import array
from collections.abc import Iterator
from typing import Any

from .._core.errors import Failure, short_repr
from .._executors.port import Chunk
from .checkpoint_store import CheckpointError, Store
from .fingerprint import segment_key

__all__ = ["FLUSH_SECONDS", "SEGMENT_MAX", "Cut", "PrefixCutter", "Recorder", "cut_chunk", "item_error"]

FLUSH_SECONDS = 0.5  # results wait at most about this long before they are written
SEGMENT_MAX = 256  # positions per segment: one changed item recomputes at most this many

Cut = tuple[list[tuple[int, int, int]], list]  # (start, end, number of results) per segment; the results


def cut_chunk(chunk: Chunk, positions: Any, keep_failed: bool) -> tuple[list[tuple[int, int, int]], list, set[int]]:
    """Cut a chunk of results into segments: consecutive complete positions, failures apart.

    Args:
        chunk: a part of the last stage's output.
        positions: the positions the chunk completes (fed positions in its
            span), or None: those that gave a result.
        keep_failed: store failures (each as a segment of its own).

    Returns:
        ``(start, end, results)`` per segment, the kept results of all of
        them in order, and the failed positions.
    """
    idx, outputs = chunk.idx, chunk.items
    if positions is None:
        positions = idx if isinstance(idx, range) else sorted(set(idx))
    failed: set[int] = set()
    if chunk.special:
        failed = {i for i, v in zip(idx, outputs, strict=True) if v.__class__ is Failure}
    if not failed and isinstance(idx, range) and isinstance(positions, range) and idx == positions:
        return [(a, b, b - a) for a, b in _runs(positions, failed, False)], outputs, failed  # a map: one each
    idx_list = list(idx)
    segs = []
    kept: list = []
    for a, b in _runs(positions, failed, keep_failed):
        lo = bisect.bisect_left(idx_list, a)
        hi = bisect.bisect_left(idx_list, b)
        kept.extend(outputs[lo:hi])
        segs.append((a, b, hi - lo))
    return segs, kept, failed


class PrefixCutter:
    """Prefix mode: store the results of the positions known complete.

    In an ordered flow with batch stages a result's index is that of its
    batch's first item, and batches leave in order, so every position below
    the newest result's index is complete; a `Failure` passes a batch that
    is still filling, so its index says nothing of the positions before it.
    A failure that is not stored ends what can be stored at its position.
    """

    def __init__(self) -> None:
        self.open_from = 0  # the first position not yet stored
        self.limit = sys.maxsize  # a failure not stored ends what can be stored
        self._idx: list[int] = []  # delivered, not yet stored: positions and results
        self._held: list = []

    def cut(self, chunk: Chunk, keep_failed: bool) -> Cut:
        mark = -1
        for i, v in zip(chunk.idx, chunk.items, strict=True):
            if v.__class__ is Failure:
                if not keep_failed:
                    self.limit = min(self.limit, i)
                    continue
            elif i > mark:
                mark = i
            self._idx.append(i)
            self._held.append(v)
        return self.store_below(mark)

    def store_below(self, end: int) -> Cut:
        """Return the segment ``[open_from, end)`` (capped at a failure) with its results."""
        end = min(end, self.limit)
        start = self.open_from
        if end <= start:
            return [], []
        kept = [v for i, v in zip(self._idx, self._held, strict=True) if i < end]
        rest = [(i, v) for i, v in zip(self._idx, self._held, strict=True) if i >= end]
        self._idx = [i for i, _ in rest]
        self._held = [v for _, v in rest]
        self.open_from = end
        return [(start, end, len(kept))], kept


def _runs(positions: Any, failed: set[int], keep_failed: bool) -> Iterator[tuple[int, int]]:
    """Split positions into runs of consecutive ones (at most SEGMENT_MAX); a failure stands alone or is left out."""
    if isinstance(positions, range) and not failed:
        for a in range(positions.start, positions.stop, SEGMENT_MAX):
            yield a, min(a + SEGMENT_MAX, positions.stop)
        return
    start = prev = None
    for p in positions:
        if p in failed:
            if start is not None:
                yield start, prev + 1  # type: ignore[operator]
                start = None
            if keep_failed:
                yield p, p + 1
            continue
        if start is None:
            start = prev = p
        elif p != prev + 1 or p - start >= SEGMENT_MAX:  # type: ignore[operator]
            yield start, prev + 1  # type: ignore[operator]
            start = prev = p
        else:
            prev = p
    if start is not None:
        yield start, prev + 1  # type: ignore[operator]


class Recorder:
    """Collect chunks of results; a writer thread stores them in one transaction per flush."""

    def __init__(self, store: Store, segments: Any, items_at: Any, keyed: bool) -> None:
        self.store = store
        self.segments = segments
        self.items_at = items_at
        self.keyed = keyed
        self.error: BaseException | None = None
        self._pending: list[tuple[Chunk | None, Any]] = []
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._written = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ezflow-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, chunk: Chunk | None, positions: Any) -> None:
        """Queue a chunk of results and the source positions it completes (None: those it has) for writing."""
        with self._cond:
            first = not self._pending
            self._pending.append((chunk, positions))
            if first:
                self._cond.notify()

    def check(self) -> None:
        """Raise the writer's error, if writing failed."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Write what is pending; the writer then closes the file on its own.

        Closing folds the WAL back into the file (a few ms of fsync): the
        caller does not wait for it, since the rows are committed already.
        """
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.ident is not None:
            self._written.wait()
        else:
            self.store.close()

    def _loop(self) -> None:
        # Cut, key and pickle what arrives as it arrives (overlapping the run);
        # insert the prepared rows in one transaction at most every FLUSH_SECONDS.
        cond = self._cond
        rows: list[dict[str, Any]] = []
        written_at = -FLUSH_SECONDS
        try:
            while True:
                with cond:
                    while not self._pending and not self._closed:
                        left = written_at + FLUSH_SECONDS - time.monotonic()
                        if rows and left <= 0:
                            break
                        cond.wait(left if rows else None)
                    batch, self._pending = self._pending, []
                    closed = self._closed
                if self.error is not None:
                    rows.clear()
                    if closed:
                        break
                    continue
                try:
                    if batch:
                        row = self._prepare([self.segments(chunk, pos) for chunk, pos in batch])
                        if row is not None:
                            rows.append(row)
                    if rows and (closed or time.monotonic() - written_at >= FLUSH_SECONDS):
                        self.store.append_rows(rows)
                        rows.clear()
                        written_at = time.monotonic()
                except BaseException as exc:
                    self.error = exc if isinstance(exc, CheckpointError) else _write_error(self.store, exc)
                if closed:
                    break
        finally:
            self._written.set()
            self.store.close()

    def _prepare(self, batch: list[Cut]) -> dict[str, Any] | None:
        """Return one row: the segments' bounds, their items' keys, their results pickled."""
        starts, ends, offsets = array("q"), array("q"), array("q")
        keys: list[bytes] = []
        outputs: list = []
        failures = 0
        n = 0
        for segs, results in batch:
            outputs.extend(results)
            for a, b, count in segs:
                starts.append(a)
                ends.append(b)
                if count == 1 and results and outputs[n].__class__ is Failure:
                    failures += 1
                n += count
                offsets.append(n)
                items = self.items_at(a, b)
                if self.keyed:
                    try:
                        keys.append(segment_key(items))
                    except Exception as exc:
                        raise item_error(items, a, exc) from exc
        if not starts:
            return None
        try:
            blob = pickle.dumps(outputs, protocol=5)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {str(self.store.path)!r}: a result cannot be pickled, so it cannot be stored "
                f"({type(exc).__name__}: {exc}); return picklable results, or run without checkpoint"
            ) from exc
        keyed = b"".join(keys) if self.keyed else None
        return {
            "starts": starts, "ends": ends, "keys": keyed, "offsets": offsets, "outputs": blob, "failures": failures
        }


def item_error(items: list, start: int, exc: BaseException) -> CheckpointError:
    """Return the error for a segment ``items`` (from position `start`) whose key failed: it names the item."""
    for i, item in enumerate(items):
        try:
            pickle.dumps(item, protocol=5)
        except Exception as err:
            exc = err
            start += i
            items = [item]
            break
    return CheckpointError(
        f"checkpoint: item {start} ({short_repr(items[0] if items else None)}) cannot be pickled, so a later "
        f"run could not recognise it ({type(exc).__name__}: {exc}); pass checkpoint_match='position' to "
        "match items by their position only"
    )


def _write_error(store: Store, exc: BaseException) -> CheckpointError:
    err = CheckpointError(
        f"checkpoint {str(store.path)!r}: writing results failed ({type(exc).__name__}: {exc}); "
        "the run was stopped so that no result goes unstored"
    )
    err.__cause__ = exc
    return err

