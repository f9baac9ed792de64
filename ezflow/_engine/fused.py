"""A chain of fused stages (`plan.chain`) driven as one stage, its figures kept stage by stage.

    inbox --> FusedDriver (one StageDriver: pieces, order, window, workers) --> outbox
                 |  port.done(piece, values, errs, busy per step)
                 v
    counters[0] items in, busy 0 ... counters[k] busy k, items out (each stage's own figures)

The workers time each step of the chain, so a stage's busy time is what
its function took; an item that reaches a step counts in that stage's
items in and done; an item that failed at a step is that stage's error
(or skip) and, but with errors="return" (its `Failure` passes on, as
between separate stages), reaches no later step. A `StageDriver` writes the
figures of every stage it holds (`all_counters`, `steps`, `out_counters`):
this driver gives it the chain's.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._core.stats import _Counters
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
