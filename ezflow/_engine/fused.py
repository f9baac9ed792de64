"""A chain of fused stages (`plan.chain`) driven as one stage, its figures kept stage by stage.

    inbox --> FusedDriver (one StageDriver: pieces, order, window, workers) --> outbox
                 |  port.done(piece, values, errs, busy per step)
                 v
    counters[0] items in, busy 0 ... counters[k] busy k, items out (each stage's own figures)

The workers time each step of the chain, so a stage's busy time is what
its function took; an item that reaches a step counts in that stage's
items in and done; an item that failed at a step is that stage's error
(or skip) and, but with errors="return" (its `Failure` passes on, as
between separate stages), reaches no later step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._core.stats import _Counters
from .._executors.port import ItemError, Piece
from .._plan.chain import fused_spec
from .._plan.spec import StageSpec
from .channel import Channel
from .stage import Aborter, StageDriver

__all__ = ["FusedDriver"]


class FusedDriver(StageDriver):
    """Runs consecutive stages as one chain in the same workers; writes each stage's own figures."""

    def __init__(
        self,
        specs: Sequence[StageSpec],
        run: Aborter,
        inbox: Channel,
        outbox: Channel,
        counters: Sequence[_Counters],
        *,
        total: int | None,
    ) -> None:
        super().__init__(fused_spec(specs), run, inbox, outbox, counters[0], total=total)
        self.all_counters = tuple(counters)
        self.out_counters = counters[-1]
        self.steps = tuple((s.name, c) for s, c in zip(specs, counters, strict=True))
        names = tuple(s.name for s in specs)
        for c in counters:
            c.fused_with = names
        self._passes_failures = self.spec.errors == "return"

    def done(
        self,
        piece: Piece,
        values: list[Any],
        errs: Sequence[ItemError],
        busy: float | tuple[float, ...],
        retries: int = 0,
        worker: int | None = None,
    ) -> None:
        """Record a finished piece in each stage's figures; emit its results as soon as order allows."""
        counters = self.all_counters
        last = len(counters) - 1
        # a piece the parent failed (a dead worker, an item that did not load) has one figure
        spent = busy if isinstance(busy, tuple) else (busy,) + (0.0,) * last
        failed = [0] * len(counters)
        for e in errs:
            failed[e.step] += 1
        n = len(piece.items)
        reached = []  # items that reached each step
        for k, c in enumerate(counters):
            reached.append(n)
            if k:
                c.start()
                c.add(items_in=n)
            if k < last:
                c.add(items_out=n - failed[k])  # the last stage's: when its output is emitted
            if not self._passes_failures:
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
