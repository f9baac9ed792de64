"""One CPU budget for a flow's process stages: workers follow the bottleneck.

    Run.__init__  Budget.of(drivers)   the process stages left at workers=None (two or more)
                  share()              NUM_CPUS workers split evenly, at least one each
    budget thread every REBALANCE_SECONDS: look() at each stage over the last window,
                  decide() one move, apply it with executor.resize() + counters.set_workers()

Without a budget, each such stage would run one worker per CPU: a flow of
three stages on 8 CPUs starts 24 processes that fight over 8 cores. With
one, the stages share about one worker per CPU, and the run moves workers
to where the work is. Each window (`Look`), per stage: how busy its
workers were (worker seconds inside items over worker seconds it had),
whether items wait for a worker, and how long it was blocked on a full
queue downstream. Then at most one move (`decide`):

- the taker is the busiest stage whose workers are nearly all busy
  (`NEEDY_BUSY`) with items waiting and room to send results on: the
  stage the panel marks as the bottleneck;
- it gets a worker from a stage that waits: one blocked on its output, or
  one whose work fits in a worker less at `SPARE_BUSY` (so the move does
  not make the donor needy at the next look: no ping-pong);
- with no donor, it gets a new one only while the flow's own processes use
  less than `SPARE_CPU` of the CPUs: its workers wait on something else
  (I/O, a lock), so another does not take a core from anyone.

A stage never drops below one worker, nor goes past `spec.workers` (one
per CPU, as without a budget). Stages whose `workers` the user chose, and
thread, async and dask stages, are outside the budget: they keep theirs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._core.env import NUM_CPUS
from .._core.record import record
from .._core.stats import FlowStats

__all__ = ["Budget", "Look", "decide", "share"]

REBALANCE_SECONDS = 0.25
NEEDY_BUSY = 0.85
SPARE_BUSY = 0.7
SPARE_CPU = 0.8
BLOCKED_SHARE = 0.1  # of a window spent waiting for room downstream: the stage is held back, not holding back


@record(frozen=True)
class Look:
    """One budget stage over one window."""

    workers: int  # running now
    cap: int  # the most it may have (spec.workers)
    busy: float  # share of its worker time spent inside items, 0..1
    waiting: bool  # items wait for a worker now
    blocked: float  # share of the window its results waited for room downstream
    running: bool = True  # False once its input has ended and its work is done


def share(cpus: int, stages: int) -> list[int]:
    """Return the first split of `cpus` workers over `stages` stages: even, at least one each."""
    base, extra = divmod(cpus, stages)
    return [max(1, base + (i < extra)) for i in range(stages)]


def decide(looks: Sequence[Look], cpu_share: float | None) -> tuple[int | None, int] | None:
    """Return the move to make (donor index or None for a new worker, taker index), or None.

    Args:
        looks: each budget stage over the last window, in flow order.
        cpu_share: CPU the flow's own processes used over the window, as a share
            of the machine's CPUs (None: not measured here).
    """
    needy = [
        i
        for i, s in enumerate(looks)
        if s.running and s.workers < s.cap and s.busy >= NEEDY_BUSY and s.waiting and s.blocked < BLOCKED_SHARE
    ]
    if not needy:
        return None
    taker = max(needy, key=lambda i: looks[i].busy)

    def spare(s: Look) -> bool:
        if s.workers <= 1:
            return False
        return not s.running or s.blocked >= BLOCKED_SHARE or s.busy * s.workers <= (s.workers - 1) * SPARE_BUSY

    donors = [i for i, s in enumerate(looks) if i != taker and spare(s)]
    if donors:
        return min(donors, key=lambda i: looks[i].busy), taker
    if cpu_share is not None and cpu_share < SPARE_CPU:
        return None, taker
    return None


class Budget:
    """Splits the CPUs between a run's process stages that left `workers` to ezflow, and moves them."""

    def __init__(self, members: list[tuple[int, Any]], snapshot: Callable[[], FlowStats], cpus: int) -> None:
        self.members = members  # (stage index in the flow, its StageDriver)
        self.snapshot = snapshot
        self.cpus = cpus
        self.moves = 0
        self._last: tuple[float, FlowStats, float] | None = None

    @classmethod
    def of(cls, drivers: Sequence[Any], snapshot: Callable[[], FlowStats], cpus: int = NUM_CPUS) -> Budget | None:
        """Return the budget of a run's stages, or None when fewer than two stages share one."""
        members = [
            (i, d)
            for i, d in enumerate(drivers)
            if d.spec.auto_workers and d.spec.kind in ("map", "filter", "flat_map") and d.spec.mode == "process"
        ]
        if len(members) < 2:
            return None
        budget = cls(members, snapshot, cpus)
        for (_, d), n in zip(members, share(cpus, len(members)), strict=True):
            d.counters.auto_workers = True
            budget._set(d, n)
        return budget

    def run(self, done: threading.Event) -> None:
        """Rebalance every `REBALANCE_SECONDS` until `done` is set (the run's end)."""
        self.step()  # the first window starts now
        while not done.wait(REBALANCE_SECONDS):
            try:
                self.step()
            except Exception:  # a budget that cannot measure must not fail the work: the split stays
                return

    def step(self) -> None:
        """Look at the last window and make at most one move."""
        now = time.perf_counter()
        stats = self.snapshot()
        cpu = self._cpu()
        last, self._last = self._last, (now, stats, cpu)
        if last is None:
            return
        t0, before, cpu0 = last
        window = now - t0
        if window <= 0:
            return
        looks = [self._look(i, d.spec.workers, stats, before, window) for i, d in self.members]
        cpu_share = (cpu - cpu0) / (window * self.cpus) if cpu >= 0 and cpu0 >= 0 else None
        move = decide(looks, cpu_share)
        if move is None:
            return
        donor, taker = move
        if donor is not None:
            d = self.members[donor][1]
            self._set(d, looks[donor].workers - 1)
        d = self.members[taker][1]
        self._set(d, looks[taker].workers + 1)
        self.moves += 1

    @staticmethod
    def _look(i: int, cap: int, now: FlowStats, before: FlowStats, window: float) -> Look:
        s, b = now.stages[i], before.stages[i]
        had = s.worker_time - b.worker_time
        busy = (s.working_seconds - b.working_seconds) / had if had > 0 else 0.0
        blocked = (now.blocked_on_output(i) - before.blocked_on_output(i)) / window
        return Look(
            workers=s.workers,
            cap=cap,
            busy=min(1.0, max(0.0, busy)),
            waiting=s.queue_depth > 0,
            blocked=blocked,
            running=s.state in ("pending", "running"),
        )

    def _cpu(self) -> float:
        """CPU seconds of the flow's own processes: the budget stages' workers and this process (-1: unknown)."""
        total = time.process_time()
        for _, d in self.members:
            used = d.executor.cpu_seconds()
            if used is None:
                return -1.0
            total += used
        return total

    @staticmethod
    def _set(driver: Any, n: int) -> None:
        driver.executor.resize(n)
        driver.counters.set_workers(n)
