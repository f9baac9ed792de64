"""What worker processes forked during one `ezflow.apply` call find in the memory they inherit.

    parent: plan (the frame, fn, how to cut it) --> _held[key]
            ProcessPool forked now (a private pool)   worker: its copy-on-write view of _held
    task:   Span(key, a, b) ----------------------->  plan.work(plan.chunk(a, b))
    end:    the pool is stopped, _held[key] dropped

A frame reaches forked workers without a byte copied: ``fork`` gives each
worker the parent's pages copy-on-write, and a worker only reads them. What
would otherwise be written into shared memory chunk by chunk (about 0.7 s of
the parent's CPU for a 1 GB frame on these machines, while the workers wait
on two cores for it) costs a fork (a few ms). The pool is forked after the
plan is held and never goes back to the warm cache: its workers hold the
caller's memory as it was. A worker started later in the call (one that
replaces a dead or recycled worker) is forked from the parent, which still
holds the plan. Only the fork start method can do this; `ezflow.apply`
decides when to use it (`wanted`).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["INHERIT_BYTES", "Span", "held", "run_span"]

INHERIT_BYTES = 32 << 20  # below this a frame goes by shared memory, on the warm pool (no fork to wait for)

_held: dict[int, Any] = {}
_keys = itertools.count()
_lock = threading.Lock()


class Span:
    """Units a..b of a held plan: what a task carries instead of the chunk itself."""

    __slots__ = ("a", "b", "key", "unit")

    def __init__(self, key: int, a: int, b: int, unit: str) -> None:
        self.key, self.a, self.b, self.unit = key, a, b, unit

    def __reduce__(self) -> tuple[Any, ...]:
        return (Span, (self.key, self.a, self.b, self.unit))

    def __repr__(self) -> str:  # how an error names the chunk: its units, as pandas counts them
        return f"<{self.unit} {self.a}..{self.b - 1}>" if self.b > self.a else f"<no {self.unit}>"


@contextlib.contextmanager
def held(plan: Any) -> Iterator[int]:
    """Hold `plan` for workers forked from now until the block ends; yield its key."""
    with _lock:
        key = next(_keys)
        _held[key] = plan
    try:
        yield key
    finally:
        with _lock:
            del _held[key]


def run_span(span: Span) -> Any:
    """Run the held plan's work on units a..b (in a worker forked while the plan was held)."""
    plan = _held.get(span.key)
    if plan is None:  # a worker not forked during the call: never by design, so say what broke
        raise RuntimeError(
            "ezflow.apply: this worker process was not forked during the call, so it does not "
            "hold the data; please report this (workaround: start_method='spawn')"
        )
    return plan.work(plan.chunk(span.a, span.b))
