"""One CPU budget for a flow's process stages: it starts from one worker per CPU each, and never loses to that.

    Run.__init__  Budget.of(drivers)   the process stages left at workers=None (two or more):
                                       each starts with one worker per CPU (`spec.workers`), as without a budget
    budget thread every REBALANCE_SECONDS: look() at each stage over the last window,
                  decide() each stage's count, then executor.resize()

Without a budget each such stage runs one worker per CPU: a flow of three
stages on 2 CPUs runs 6 processes. That oversubscription is the fastest
split measured here (the demo, W6): a stage's workers spend part of every
item's round trip waiting on the parent (which pickles and dispatches on
its own core) or on a pipe, and a run of a second or two has no time to
learn a better split. So the budget starts there and moves only on what it
measured:

- **More** (past one per CPU, up to `WAIT_FACTOR` per CPU): a stage whose
  workers wait on something other than the CPU (a download, a sleep, a
  disk). It is the flow's bottleneck (its workers nearly all busy,
  `NEEDY_BUSY`, items waiting, room downstream) and its workers spent at
  least `OFF_CPU` of their time inside items neither running nor waiting
  for a core: the scheduler's own counts (/proc/<pid>/schedstat), so a
  worker queued behind other processes on a busy machine is not mistaken
  for one that waits on I/O; the time inside items is the workers' own
  timing of the pieces that finished. Once two looks in a row (0.25 s
  apart) saw that, it grows at once to as many workers as keep its CPUs
  busy at the share of item time its workers run on one (at least by half),
  and by half at each look while it holds.
- **Fewer**: only workers the stage did not use. A stage whose workers were
  busy less than `KEEP_BUSY` of the time keeps enough to stay under that
  (`ceil(busy workers / KEEP_BUSY)`, at least one), once the run is
  `SETTLE_SECONDS` old and `STEADY_LOOKS` looks in a row agree: a stage
  starved by another one gives back its idle workers; a busy one keeps
  them, so a CPU-bound split never drops below what ran without a budget.
- **Back**: a stage below one per CPU whose workers are busy again gets
  its workers back at once (all of them when items wait for it).

Stages whose `workers` the user chose, and thread, async and dask stages,
are outside the budget. Without /proc there is no budget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._core.record import record
from .._core.stats import FlowStats
from .._executors.meter import machine_idle_seconds

__all__ = ["Budget", "Look", "decide", "waits_elsewhere"]

_log = logging.getLogger("ezflow")

FIRST_LOOK_SECONDS = 0.1
REBALANCE_SECONDS = 0.25
SETTLE_SECONDS = 2.0  # no worker is given back in a run's first seconds: a short run keeps the static split
STEADY_LOOKS = 3  # looks in a row that agree before a worker is given back
WAIT_FACTOR = 4  # a stage that waits on I/O may run this many workers per CPU
NEEDY_BUSY = 0.85
KEEP_BUSY = 0.5  # a stage keeps enough workers to be busy at most this share of the time
OFF_CPU = 0.5  # share of busy time neither on a CPU nor waiting for one, above which a stage waits on I/O
IDLE_CPU = 0.2  # without the scheduler's counts: the machine's CPUs must have been this idle
WAITING_CPU = 0.5  # without them: CPU seconds per busy worker second below which a stage waits
BLOCKED_SHARE = 0.1  # of a window spent waiting for room downstream: held back, not holding back


@record(frozen=True)
class Look:
    """One budget stage over one window."""

    workers: int  # running now
    static: int  # one per CPU: what it runs without a budget (spec.workers)
    busy: float  # share of its worker time spent inside items, 0..1
    off_cpu: float | None  # share of that time neither running nor waiting for a core (None: not measured)
    cpu_per_busy: float  # CPU seconds per busy worker second (1.0: CPU-bound)
    waiting: bool  # items wait for a worker now
    blocked: float  # share of the window its results waited for room downstream


def waits_elsewhere(s: Look, idle: float | None) -> bool:
    """Return True if `s` is the bottleneck and waits on something other than a CPU (I/O in a process stage).

    `idle`: the share of the machine's CPU time that was idle over the window,
    used only when the stage's wait for a core was not measured (None: unknown).
    """
    if not (s.busy >= NEEDY_BUSY and s.waiting and s.blocked < BLOCKED_SHARE):
        return False
    if s.off_cpu is not None:
        return s.off_cpu >= OFF_CPU
    return idle is not None and idle >= IDLE_CPU and s.cpu_per_busy < WAITING_CPU


def decide(s: Look, idle: float | None, settled: bool) -> int:
    """Return the worker count `s` wants now (fewer is applied only once `STEADY_LOOKS` looks agree).

    `settled`: the run is old enough (`SETTLE_SECONDS`) to give idle workers back.
    """
    if waits_elsewhere(s, idle):
        grow = s.workers + max(1, s.workers // 2)
        if s.off_cpu is not None and s.off_cpu < 1.0:
            # at once as many as keep its CPUs busy at the share of item time its workers run (a
            # chain of fused stages whose middle one waits: 0.2 ms CPU, 1 ms sleep, 0.2 ms CPU -> 7);
            # a run of a second or two is over before growing by half at each look gets there
            grow = max(grow, math.ceil(s.static / (1.0 - s.off_cpu)))
        return min(WAIT_FACTOR * s.static, grow)
    if s.workers < s.static and s.busy >= NEEDY_BUSY and s.waiting:
        return s.static  # busy again: the workers it gave back, at once
    keep = max(1, math.ceil(s.busy * s.workers / KEEP_BUSY))
    if keep > s.workers:
        return max(s.workers, min(keep, s.static))  # busier: back toward one per CPU
    if settled and keep < s.workers:
        return keep
    return s.workers


class Budget:
    """Sizes a run's process stages that left `workers` to ezflow: one per CPU each, more or fewer as measured."""

    def __init__(self, members: list[tuple[range, Any]], snapshot: Callable[[], FlowStats], cpus: int) -> None:
        self.members = members  # (the stages it runs: their indices in the flow, its StageDriver)
        self.snapshot = snapshot
        self.cpus = cpus
        self.started = time.perf_counter()
        self._last: tuple[float, FlowStats, list[tuple[float, float | None]], float | None] | None = None
        self._fewer = [0] * len(members)  # looks in a row that wanted fewer workers for each stage
        self._more = [0] * len(members)  # looks in a row that saw the stage wait on I/O

    @classmethod
    def of(cls, drivers: Sequence[tuple[range, Any]], snapshot: Callable[[], FlowStats]) -> Budget | None:
        """Return the budget of a run's stages, or None when fewer than two stages share one.

        `drivers`: each driver with the flow's stages it runs (several for a chain of fused
        stages, `plan.chain`: it is sized as one stage, and may grow when it waits on I/O).
        """
        members = [
            (r, d)
            for r, d in drivers
            if d.spec.auto_workers and d.spec.kind in ("map", "filter", "flat_map") and d.spec.mode == "process"
        ]
        if sum(len(r) for r, _ in members) < 2 or machine_idle_seconds() is None:
            return None  # nothing to share; or no /proc to measure with: one worker per CPU each, as before
        budget = cls(members, snapshot, max(d.spec.workers for _, d in members))
        for _, d in members:  # the static split: one worker per CPU each
            for c in d.all_counters:
                c.auto_workers = True
            _set(d, d.spec.workers)
        return budget

    def run(self, done: threading.Event) -> None:
        """Look every `REBALANCE_SECONDS` until `done` is set (the run's end)."""
        try:
            self.step()  # the first window starts now, and is short: a waiting stage needs workers soon
            wait = FIRST_LOOK_SECONDS
            while not done.wait(wait):
                self.step()
                wait = REBALANCE_SECONDS
        except Exception as exc:  # a budget bug must not fail the work, nor leave a half-moved split
            self._fall_back(exc, done)

    def _fall_back(self, exc: Exception, done: threading.Event) -> None:
        """Say once that the budget failed, and give its stages the static split for the rest of the run."""
        _log.warning(
            "ezflow: the CPU budget failed (%s: %s); stages %s keep the static split (%s workers) for the rest "
            "of this run",
            type(exc).__name__,
            exc,
            ", ".join(d.spec.name for _, d in self.members),
            "/".join(str(d.spec.workers) for _, d in self.members),
            exc_info=exc,
        )
        if done.is_set():
            return  # the run ended: nothing to move
        for _, d in self.members:
            try:
                _set(d, d.spec.workers)
            except Exception:  # a stage that ended meanwhile cannot resize: it keeps the workers it has
                _log.debug("ezflow: the budget's static split could not be applied", exc_info=True)

    def step(self) -> None:
        """Look at the last window and move each stage to what it wants (fewer only after `STEADY_LOOKS` looks)."""
        now = time.perf_counter()
        stats = self.snapshot()
        sched = [d.executor.sched_seconds() for _, d in self.members]
        if any(c is None for c in sched):
            return  # not measured (yet): the split stays
        used = [c for c in sched if c is not None]
        idle_now = machine_idle_seconds()
        last, self._last = self._last, (now, stats, used, idle_now)
        if last is None:
            return
        t0, before, used0, idle0 = last
        window = now - t0
        if window <= 0:
            return
        if not any(stats.stages[r.start].state == "running" for r, _ in self.members):
            return
        idle = None if idle_now is None or idle0 is None else (idle_now - idle0) / (window * self.cpus)
        settled = now - self.started >= SETTLE_SECONDS
        for k, (r, d) in enumerate(self.members):
            s = _look(r, d.spec.workers, used[k], used0[k], stats, before, window)
            n = decide(s, idle, settled)
            # past one per CPU only once two looks in a row saw the stage wait on I/O (a piece that
            # finished late, or a worker held up by the parent, can make one window look so);
            # back to one per CPU at once; fewer only once `STEADY_LOOKS` looks in a row agree,
            # so one quiet window takes nothing away
            self._more[k] = self._more[k] + 1 if n > max(s.workers, s.static) else 0
            self._fewer[k] = self._fewer[k] + 1 if n < s.workers else 0
            if n > max(s.workers, s.static) and self._more[k] < 2:
                continue
            if n > s.workers or self._fewer[k] >= STEADY_LOOKS:
                _set(d, n)
                self._fewer[k] = 0


def _look(
    stages: range,
    static: int,
    used: tuple[float, float | None],
    used0: tuple[float, float | None],
    now: FlowStats,
    before: FlowStats,
    window: float,
) -> Look:
    i, last = stages.start, stages.stop - 1
    s, b = now.stages[i], before.stages[i]
    had = s.worker_time - b.worker_time
    working = s.working_seconds - b.working_seconds
    inside = s.busy_seconds - b.busy_seconds
    for j in stages[1:]:  # a chain's workers (plan.chain): each stage has its steps' busy time,
        # the first one the pieces running now
        more = now.stages[j].busy_seconds - before.stages[j].busy_seconds
        working += more
        inside += more
    cpu = max(0.0, used[0] - used0[0])
    off_cpu = None
    # time inside items as the workers timed the pieces that finished: the parent's clock on
    # pieces still out also counts a piece queued behind another in its worker, and a result
    # waiting in the pipe for the parent; those only when few pieces finished (long items)
    if inside < 0.25 * working:
        inside = working
    if used[1] is not None and used0[1] is not None and inside > 0:
        on_or_queued = cpu + max(0.0, used[1] - used0[1])
        off_cpu = min(1.0, max(0.0, 1.0 - on_or_queued / inside))
    return Look(
        workers=s.workers,
        static=static,
        busy=min(1.0, max(0.0, working / had)) if had > 0 else 0.0,
        off_cpu=off_cpu,
        cpu_per_busy=cpu / working if working > 0 else 1.0,
        waiting=s.queue_depth > 0,
        blocked=(now.blocked_on_output(last) - before.blocked_on_output(last)) / window,
    )


def _set(driver: Any, n: int) -> None:
    n = max(1, min(n, WAIT_FACTOR * driver.spec.workers))
    driver.executor.resize(n)
    driver.set_workers(n)
