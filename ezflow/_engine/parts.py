"""A stage's output, part by part: what a piece's results become, and the positions they complete.

    port.done(piece, values, errs) --build_part--> an output Chunk: values (map), kept items
                                                   (filter), spread lists (flat_map), a Failure
                                                   in place of a failed item; and its span

A stage emits each part as soon as it is built (in order, if it is
ordered), so no result waits for the rest of its chunk. The part's `span`
is the source positions it completes: what a checkpoint stores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._core.errors import Failure, MemoryLimitExceeded, attach_traceback
from .._core.stats import _Counters
from .._executors.port import Chunk, ItemError
from .._plan.spec import StageSpec

__all__ = ["Aborted", "build_part", "span_of"]


class Aborted(Exception):
    """An item failed with errors="raise": the run was aborted while its part was built."""


def build_part(
    spec: StageSpec,
    counters: _Counters,
    abort: Callable[..., None],
    chunk: Chunk,
    start: int,
    values: list[Any],
    errs: Sequence[ItemError],
    steps: Sequence[tuple[str, _Counters]] | None = None,
) -> Chunk:
    """Return the output of items [start, start + len(values)) of `chunk`, counting its failures.

    `steps`: the (name, counters) of each stage a chain of fused stages runs
    (`plan.chain`): a failure is that step's, named and counted there, with
    the item as that step received it.

    Raises:
        Aborted: an item failed in a stage with errors="raise" (`abort` was called with its error).
    """
    kind = spec.kind
    n = len(values)
    idx = chunk.idx
    whole = start == 0 and n == len(idx)
    span = chunk.span if whole else span_of(chunk, start, start + n)
    if kind == "map" and not errs:
        return Chunk(chunk.seq, idx if whole else idx[start : start + n], values, chunk.special, span)
    stages = steps or ((spec.name, counters),)
    # tallied here and added once per stage: workers build parts at the same time
    tally = [[0, 0, 0] for _ in stages]  # errors, skipped, memory failures, per stage
    filtered = 0
    items = chunk.items
    out: list = []
    out_idx: list = []
    special = chunk.special
    made = 0
    errmap = {e.pos: e for e in errs} if errs else None
    for i, v in enumerate(values):
        p = start + i
        if errmap is not None and i in errmap:
            err = errmap[i]
            exc, tb = err.error, err.tb
            name, c = stages[err.step]
            item = err.item if err.step else items[p]
            c.book.failed(idx[p], item, exc, tb)
            t = tally[err.step]
            if isinstance(exc, MemoryLimitExceeded):
                t[2] += 1
            failure = Failure(item, idx[p], name, attach_traceback(exc, tb), tb, err.attempts)
            if spec.errors == "raise":
                t[0] += 1
                _count(stages, tally, filtered)
                abort(failure.to_error(), stage=name)
                raise Aborted
            if spec.errors == "skip":
                t[1] += 1
                continue
            t[0] += 1
            out.append(failure)
            out_idx.append(idx[p])
            special = True
            if err.step == len(stages) - 1:  # a failure an earlier step made passes the later ones
                made += 1
        elif kind == "map":
            out.append(v)
            out_idx.append(idx[p])
        elif kind == "filter":
            if v:
                out.append(items[p])
                out_idx.append(idx[p])
            else:
                filtered += 1
        else:  # flat_map
            out.extend(v)
            out_idx.extend([idx[p]] * len(v))
    _count(stages, tally, filtered)
    result = Chunk(chunk.seq, out_idx, out, special, span)
    result.made = made
    return result


def _count(stages: Sequence[tuple[str, _Counters]], tally: list[list[int]], filtered: int) -> None:
    # `filtered`: a filter stage's, never fused, so always the first (only) stage's
    for k, ((_, c), (errors, skipped, memory)) in enumerate(zip(stages, tally, strict=True)):
        drop = filtered if k == 0 else 0
        if errors or skipped or memory or drop:
            c.add(errors=errors, skipped=skipped, filtered=drop, memory_failures=memory)


def span_of(chunk: Chunk, s: int, e: int) -> tuple[int, int]:
    """The source positions items [s, e) of `chunk` complete.

    A position whose results are cut in two (a flat_map's outputs a worker
    sent back in two parts downstream) belongs to neither part: a
    checkpoint then computes it again rather than store half of it.
    """
    idx = chunk.idx
    lo, hi = chunk.span
    if s > 0:
        lo = idx[s] if idx[s - 1] != idx[s] else idx[s] + 1
    if e < len(idx):
        hi = idx[e]
    return lo, max(lo, hi)
