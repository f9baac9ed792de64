"""One CPU budget for a flow's process stages: workers follow the work.

    Run.__init__  Budget.of(drivers)   the process stages left at workers=None (two or more)
                  share()              twice the CPUs split evenly (at most one per CPU, at least one each)
    budget thread every REBALANCE_SECONDS: look() at each stage over the last window,
                  targets() from the CPU each stage used, then executor.resize()

Without a budget each such stage would run one worker per CPU: a flow of
three stages on 8 CPUs starts 24 processes that fight over 8 cores. With
one they share about one worker per CPU, split by what each stage costs.

What a stage costs is read from the CPU time its worker processes used
(/proc), not from the wall time they spent inside items: wall time grows
with contention (a worker waiting for a core looks busy), so a stage with
more workers would look as if it needed them. In a pipeline every stage
moves at the flow's pace, so the CPU each stage used in a window is the
flow's rate times its cost per source item, whatever its worker count: the
split ``cpus * cpu_k / sum(cpu)``, rounded up (a stage never gets less than
its share), at least 1, at most `spec.workers` (one per CPU), is the one
that keeps every stage's workers fed. The stage the panel marks as the
bottleneck is the one this gives more workers; a stage that waits gives
them up. More workers come at once (the first look is after 0.1 s: a
short run cannot wait); fewer only when two looks in a row agree
(`STEADY_LOOKS`), so one noisy window takes nothing away.

A stage whose workers wait on something other than the CPU (a download in a
process stage) costs little CPU but needs workers: when its workers are
nearly all busy (`NEEDY_BUSY`) with items waiting and room downstream, use
less than half a CPU per busy second, and the machine's CPUs were idle at
least `IDLE_CPU` of the window (so they were not waiting for a core), it
gets one worker more than its share (`extra`), given back once it is no
longer busy. Stages whose `workers` the
user chose, and thread, async and dask stages, are outside the budget.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._core.env import NUM_CPUS
from .._core.record import record
from .._core.stats import FlowStats
from .._executors.meter import machine_idle_seconds

__all__ = ["Budget", "Look", "share", "targets", "waits_elsewhere"]

START_SHARE = 2  # the first split shares this many workers per CPU
FIRST_LOOK_SECONDS = 0.1
REBALANCE_SECONDS = 0.25
STEADY_LOOKS = 2
SMOOTHING = 0.4  # weight of the newest window in each stage's CPU rate
NEEDY_BUSY = 0.85
IDLE_BUSY = 0.5
IDLE_CPU = 0.2
WAITING_CPU = 0.5  # CPU seconds per busy worker second below which a stage waits on something else
BLOCKED_SHARE = 0.1  # of a window spent waiting for room downstream: held back, not holding back


@record(frozen=True)
class Look:
    """One budget stage over one window."""

    workers: int  # running now
    cap: int  # the most it may have (spec.workers)
    cpu: float  # CPU seconds per second its workers used (smoothed)
    busy: float  # share of its worker time spent inside items, 0..1
    cpu_per_busy: float  # CPU seconds per busy worker second (1.0: CPU-bound)
    waiting: bool  # items wait for a worker now
    blocked: float  # share of the window its results waited for room downstream


def share(cpus: int, stages: int) -> list[int]:
    """Return the first split of `cpus` workers over `stages` stages: even, at least one each."""
    base, extra = divmod(cpus, stages)
    return [max(1, base + (i < extra)) for i in range(stages)]


def targets(cpu: Sequence[float], cpus: int, caps: Sequence[int], extra: Sequence[int] = ()) -> list[int] | None:
    """Return each stage's worker count for CPU rates `cpu` (None: nothing measured yet).

    A stage gets its share of `cpus` in proportion to the CPU it used,
    rounded up (a share of 1.02 is 1: the 0.05 is measurement noise), at
    least 1 and at most its cap, plus its `extra` workers.
    """
    total = sum(cpu)
    if total <= 0:
        return None
    extra = list(extra) or [0] * len(cpu)
    return [
        max(1, min(cap, math.ceil(cpus * c / total - 0.05) + e)) for c, cap, e in zip(cpu, caps, extra, strict=True)
    ]


def waits_elsewhere(s: Look, idle: float | None) -> bool:
    """Return True if `s` needs another worker that would wait rather than compute (I/O in a process stage).

    `idle`: the share of the machine's CPU time that was idle over the window (None: unknown).
    """
    return (
        idle is not None
        and idle >= IDLE_CPU
        and s.workers < s.cap
        and s.busy >= NEEDY_BUSY
        and s.waiting
        and s.blocked < BLOCKED_SHARE
        and s.cpu_per_busy < WAITING_CPU
    )


class Budget:
    """Splits the CPUs between a run's process stages that left `workers` to ezflow, and moves them."""

    def __init__(self, members: list[tuple[int, Any]], snapshot: Callable[[], FlowStats], cpus: int) -> None:
        self.members = members  # (stage index in the flow, its StageDriver)
        self.snapshot = snapshot
        self.cpus = cpus
        self.rates: list[float | None] = [None] * len(members)
        self.extra = [0] * len(members)
        self._last: tuple[float, FlowStats, list[float], float | None] | None = None
        self._fewer = [0] * len(members)  # looks in a row that wanted fewer workers for each stage

    @classmethod
    def of(cls, drivers: Sequence[Any], snapshot: Callable[[], FlowStats], cpus: int = NUM_CPUS) -> Budget | None:
        """Return the budget of a run's stages, or None when fewer than two stages share one."""
        members = [
            (i, d)
            for i, d in enumerate(drivers)
            if d.spec.auto_workers and d.spec.kind in ("map", "filter", "flat_map") and d.spec.mode == "process"
        ]
        if len(members) < 2 or machine_idle_seconds() is None:
            return None  # nothing to share; or no /proc to measure with: one worker per CPU each, as before
        budget = cls(members, snapshot, cpus)
        # generous at first (twice the CPUs, split evenly): a stage has workers for its first items
        # before anything is measured; the split then comes down to what each stage uses
        first = share(START_SHARE * cpus, len(members))
        for (_, d), n in zip(members, first, strict=True):
            d.counters.auto_workers = True
            _set(d, n)
        return budget

    def run(self, done: threading.Event) -> None:
        """Rebalance every `REBALANCE_SECONDS` until `done` is set (the run's end)."""
        try:
            self.step()  # the first window starts now, and is short: a short run needs its split soon
            wait = FIRST_LOOK_SECONDS
            while not done.wait(wait):
                self.step()
                wait = REBALANCE_SECONDS
        except Exception:  # a budget that cannot measure must not fail the work: the split stays
            return

    def step(self) -> None:
        """Look at the last window and move each stage toward its share (fewer only after `STEADY_LOOKS` looks)."""
        now = time.perf_counter()
        stats = self.snapshot()
        cpu = [d.executor.cpu_seconds() for _, d in self.members]
        if any(c is None for c in cpu):
            return  # no /proc here: the first split stays
        used = [float(c or 0.0) for c in cpu]
        idle_now = machine_idle_seconds()
        last, self._last = self._last, (now, stats, used, idle_now)
        if last is None:
            return
        t0, before, used0, idle0 = last
        window = now - t0
        if window <= 0:
            return
        looks = []
        for k, (i, d) in enumerate(self.members):
            rate = max(0.0, used[k] - used0[k]) / window
            old = self.rates[k]
            self.rates[k] = rate if old is None else (1 - SMOOTHING) * old + SMOOTHING * rate
            looks.append(_look(i, d.spec.workers, self.rates[k] or 0.0, rate * window, stats, before, window))
        if not any(s.state == "running" for s in (stats.stages[i] for i, _ in self.members)):
            return
        idle = None if idle_now is None or idle0 is None else (idle_now - idle0) / (window * self.cpus)
        for k, s in enumerate(looks):
            if waits_elsewhere(s, idle):
                self.extra[k] += 1
            elif self.extra[k] and s.busy < IDLE_BUSY:
                self.extra[k] -= 1
        want = targets([s.cpu for s in looks], self.cpus, [s.cap for s in looks], self.extra)
        if want is None:
            return
        for k, ((_, d), s, n) in enumerate(zip(self.members, looks, want, strict=True)):
            # more workers at once (a short run must not wait for them); fewer only once
            # `STEADY_LOOKS` looks in a row agree, so one noisy window takes nothing away
            self._fewer[k] = self._fewer[k] + 1 if n < s.workers else 0
            if n > s.workers or self._fewer[k] >= STEADY_LOOKS:
                _set(d, n)
                self._fewer[k] = 0


def _look(i: int, cap: int, cpu: float, cpu_used: float, now: FlowStats, before: FlowStats, window: float) -> Look:
    s, b = now.stages[i], before.stages[i]
    had = s.worker_time - b.worker_time
    working = s.working_seconds - b.working_seconds
    return Look(
        workers=s.workers,
        cap=cap,
        cpu=cpu,
        busy=min(1.0, max(0.0, working / had)) if had > 0 else 0.0,
        cpu_per_busy=cpu_used / working if working > 0 else 1.0,
        waiting=s.queue_depth > 0,
        blocked=(now.blocked_on_output(i) - before.blocked_on_output(i)) / window,
    )


def _set(driver: Any, n: int) -> None:
    n = max(1, min(n, driver.spec.workers))
    driver.executor.resize(n)
    driver.counters.set_workers(n)
