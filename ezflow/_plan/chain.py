"""Consecutive process maps run as one: each item goes through every step in the same worker.

    Flow(xs).map(f).map(g).map(h)   (process stages, default options)
        plan: three StageSpecs, three stages in flow.stats, the panel and the errors
        run:  one stage whose workers call Chain((f, g, h)) on each item

Between two process stages an item otherwise crosses two pipes and the
parent (pickled, dispatched, reassembled) and each stage keeps its own
workers: a flow of three stages on two CPUs runs six processes, and small
items spend more CPU in transit than in the functions (W6: 0.86x the
chained `Pool.imap`). A chain keeps the item in the worker. It stays three
stages to the user: the worker times each step (`spent`), so each stage's
busy time, items in and out, errors and skips are its own, and a failed
item names the step that raised and the item as that step received it.

Only stages whose options make them interchangeable are fused (`fusable`):
plain maps in process mode whose worker count ezflow chooses, without a
per-item rule (``when``, retries, a time limit, a rate) and with the same
error policy, order and start method. A class stage, a filter, a batch or
a stage with any such rule keeps its own stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._core.record import replace

if TYPE_CHECKING:
    from .spec import StageSpec

__all__ = ["FUSE", "Chain", "fusable", "fused_spec", "runs"]

# Options two fused stages must share: the chain runs under one value of each.
_SHARED = ("start_method", "share_arrays", "ordered", "errors", "workers")
# False: every stage runs its own workers (tests of what separate stages do, the bench's reference)
FUSE = True


def fusable(spec: StageSpec) -> bool:
    """Return True if `spec` may run in a chain with its neighbours (a plain process map, workers ezflow's)."""
    s = spec
    return (
        s.kind == "map"
        and s.mode == "process"
        and s.auto_workers
        and s.backend is None
        and s.when is None
        and not s.retries
        and s.item_timeout is None
        and s.rate is None
        and s.chunksize is None
        and not s.is_class
        and s.max_tasks_per_worker is None
        and s.max_memory is None
        and not s.private_pool
        and not s.start_when_free
    )


def runs(specs: Sequence[StageSpec]) -> list[range]:
    """Split a flow's stages into runs of consecutive stages that may be fused (most are runs of one)."""
    out: list[range] = []
    start = 0
    for i in range(1, len(specs) + 1):
        if FUSE and i < len(specs) and _joins(specs[i - 1], specs[i]):
            continue
        out.append(range(start, i))
        start = i
    return out


def _joins(a: StageSpec, b: StageSpec) -> bool:
    return fusable(a) and fusable(b) and all(getattr(a, k) == getattr(b, k) for k in _SHARED)


def fused_spec(specs: Sequence[StageSpec]) -> StageSpec:
    """Return the spec of the one stage that runs `specs` (a run from `runs`) as a `Chain`."""
    first = specs[0]
    chain = Chain(tuple(s.fn for s in specs), tuple(s.name for s in specs))
    return replace(first, fn=chain, name="+".join(s.name for s in specs))


class Chain:
    """Call each step on the item in turn, timing each; on an error, remember which step and its input."""

    __slots__ = ("_sent", "failed", "fns", "names", "spent")

    def __init__(self, fns: tuple[Callable[[Any], Any], ...], names: tuple[str, ...]) -> None:
        self.fns = fns
        self.names = names
        self.spent = [0.0] * len(fns)  # seconds inside each step, since the worker built the stage
        self._sent = [0.0] * len(fns)  # ... of which `split` already reported
        self.failed: tuple[int, Any] | None = None  # (step, its input) of the item that raised last

    def __reduce__(self) -> tuple[Any, ...]:
        return (Chain, (self.fns, self.names))

    @property
    def __ezflow_parts__(self) -> tuple[Callable[[Any], Any], ...]:
        # serialize._by_value looks inside: a chain of notebook functions travels by value
        return self.fns

    def __repr__(self) -> str:
        return " -> ".join(self.names)

    def __call__(self, item: Any) -> Any:
        clock = time.perf_counter
        spent = self.spent
        step = 0
        try:
            for step, fn in enumerate(self.fns):
                t = clock()
                out = fn(item)
                spent[step] += clock() - t
                item = out
        except BaseException:
            self.failed = (step, item)
            raise
        return item

    def take_failure(self) -> tuple[int, Any]:
        """Return (step, its input) of the item that just raised, and forget it."""
        failed, self.failed = self.failed, None
        return failed if failed is not None else (0, None)

    def split(self, busy: float) -> tuple[float, ...]:
        """Share `busy` (a piece's seconds) among the steps as they spent it since the last split."""
        now = list(self.spent)
        parts = [b - a for a, b in zip(self._sent, now, strict=True)]
        self._sent = now
        total = sum(parts)
        if total <= 0:
            return (busy,) + (0.0,) * (len(parts) - 1)
        return tuple(busy * p / total for p in parts)
