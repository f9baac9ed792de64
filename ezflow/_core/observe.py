"""The observer contract: how progress views hear about a run.

    run (engine)  --open(stats)-->  observer
                  --update(stats)-->            every ~0.2 s while running,
                  --close(stats)-->             once, with stats.state final
                                                ("done" | "failed" | "cancelled")

Every call gets a frozen `FlowStats`; an observer never touches the engine.
A view may also offer ``bind_stop(stop)``: before ``open`` the run hands it
a callable that stops the run (thread-safe, returns at once), which is all a
Stop button needs; the view never sees the run itself.
Observers are called from one ticker thread of the run (``close`` may come
from the thread that ends the run); an exception inside an observer is
reported once as a warning and the observer is dropped: a broken view
must never break the work.
"""

from __future__ import annotations

from typing import Protocol

from .stats import FlowStats

__all__ = ["TICK_SECONDS", "Observer"]

TICK_SECONDS = 0.2


class Observer(Protocol):
    """Anything with these three methods can watch a run."""

    def open(self, stats: FlowStats) -> None: ...

    def update(self, stats: FlowStats) -> None: ...

    def close(self, stats: FlowStats) -> None: ...
