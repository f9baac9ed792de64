"""The CPU budget: process stages left at workers=None start at one worker per CPU, and move only as measured.

The policy (`decide`) is plain arithmetic and is tested as such; the runs
below use real worker processes and check what the stats say the budget
did, never how fast it was.
"""

from __future__ import annotations

import pytest

import ezflow
from ezflow._core.env import NUM_CPUS
from ezflow._engine.budget import SETTLE_SECONDS, WAIT_FACTOR, Look, decide, waits_elsewhere
from ezflow._executors.meter import machine_idle_seconds, proc_cpu_seconds, proc_sched_seconds

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def separate_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget shares the CPUs among separate stages: keep each stage in its own workers.

    (Consecutive plain process maps otherwise run fused, one chain in the same workers:
    tests/test_fused.py has the budget sizing such a chain.)
    """
    from ezflow._plan import chain

    monkeypatch.setattr(chain, "FUSE", False)


def spin(n: int) -> int:
    s = 0
    for i in range(n):
        s += i
    return s


def light(x: int) -> int:
    spin(500)
    return x


def heavy(x: int) -> int:
    spin(40_000)  # about 1 ms: 80 times light's work
    return x * 2


def look(workers: int, busy: float, *, static: int = 2, off_cpu: float | None = 0.0, cpu_per_busy: float = 1.0,
         waiting: bool = True, blocked: float = 0.0) -> Look:
    return Look(workers=workers, static=static, busy=busy, off_cpu=off_cpu, cpu_per_busy=cpu_per_busy,
                waiting=waiting, blocked=blocked)


# -- the policy ------------------------------------------------------------------------------


def test_a_busy_stage_keeps_one_worker_per_cpu():
    # CPU-bound stages sharing the cores: workers busy (computing or waiting for a core)
    for busy in (0.3, 0.6, 0.97):
        assert decide(look(2, busy), idle=0.0, settled=True) == 2
    assert decide(look(8, 0.97, static=8), idle=0.0, settled=True) == 8


def test_idle_workers_are_given_back_only_once_the_run_has_settled():
    starved = look(8, 0.1, static=8, waiting=False)  # 0.8 of a worker busy: 2 keep it under half busy
    assert decide(starved, idle=0.5, settled=False) == 8  # a short run keeps the static split
    assert decide(starved, idle=0.5, settled=True) == 2
    assert decide(look(2, 0.02, waiting=False), idle=0.5, settled=True) == 1  # never below one


def test_a_stage_busy_again_gets_its_workers_back_at_once():
    assert decide(look(1, 0.95, static=4), idle=0.0, settled=True) == 4
    assert decide(look(1, 0.95, static=4, waiting=False), idle=0.0, settled=True) == 2  # not waiting: no hurry


def test_a_stage_that_waits_on_io_grows_past_one_worker_per_cpu():
    io = look(2, 0.97, off_cpu=0.9)
    assert waits_elsewhere(io, idle=None)  # the scheduler's counts say it: the machine's load does not matter
    # at once as many as keep the CPUs busy at the share of item time on one: 2 / 0.1, at most
    # WAIT_FACTOR per CPU
    assert decide(io, idle=0.0, settled=False) == 8
    assert decide(look(2, 0.97, off_cpu=0.6), idle=0.0, settled=False) == 5  # 2 / 0.4
    assert decide(look(4, 0.97, off_cpu=0.6), idle=0.0, settled=False) == 6  # at least by half
    assert decide(look(6, 0.97, off_cpu=0.9), idle=0.0, settled=False) == 8
    assert decide(look(8, 0.97, off_cpu=0.9), idle=0.0, settled=False) == 8
    assert not waits_elsewhere(look(2, 0.97, off_cpu=0.1), idle=0.9)  # running or queued for a core: CPU-bound
    assert not waits_elsewhere(look(2, 0.6, off_cpu=0.9), idle=0.9)  # not busy
    assert not waits_elsewhere(look(2, 0.97, off_cpu=0.9, waiting=False), idle=0.9)  # nothing waits for it
    assert not waits_elsewhere(look(2, 0.97, off_cpu=0.9, blocked=0.5), idle=0.9)  # held back downstream


def test_without_the_schedulers_counts_idle_cpus_decide():
    io = look(2, 0.97, off_cpu=None, cpu_per_busy=0.05)
    assert waits_elsewhere(io, idle=0.7)
    assert not waits_elsewhere(io, idle=0.1)  # the CPUs are busy: its workers may be waiting for one
    assert not waits_elsewhere(io, idle=None)  # not measured: no growth
    assert not waits_elsewhere(look(2, 0.97, off_cpu=None), idle=0.7)  # CPU-bound


def test_cpu_seconds_of_a_process_are_read_from_proc():
    import os

    used = proc_cpu_seconds(os.getpid())
    if used is None:
        pytest.skip("no /proc here")
    spin(2_000_000)
    assert proc_cpu_seconds(os.getpid()) > used
    assert proc_cpu_seconds(2**22 + 12345) is None  # no such process
    idle = machine_idle_seconds()
    assert idle is not None and idle >= 0
    ran, waited = proc_sched_seconds(os.getpid()) or (None, None)
    if ran is not None:  # the scheduler's counts (CONFIG_SCHED_INFO)
        assert ran > 0 and waited >= 0
    assert proc_sched_seconds(2**22 + 12345) is None


# -- real runs ---------------------------------------------------------------------------------


class Peaks:
    """An observer that keeps the most workers each stage ran at any tick."""

    def __init__(self) -> None:
        self.most: dict[str, int] = {}

    def _see(self, stats) -> None:
        for s in stats.stages:
            self.most[s.name] = max(self.most.get(s.name, 0), s.workers)

    open = update = close = _see


def nap(x: int) -> int:
    import time

    time.sleep(0.01)  # waits, as a download would: no CPU
    return x


def test_the_budget_starts_at_one_worker_per_cpu_and_gives_back_idle_ones():
    peaks = Peaks()
    n = 6000
    flow = ezflow.Flow(range(n)).map(light).map(heavy)
    assert flow.collect(progress=peaks) == [x * 2 for x in range(n)]
    first, second = flow.stats.stages
    assert first.auto_workers and second.auto_workers
    assert peaks.most == {"light": NUM_CPUS, "heavy": NUM_CPUS}  # the static split first, never more for CPU work
    assert second.workers == NUM_CPUS, flow.stats  # the busy stage keeps its workers
    if NUM_CPUS >= 2 and flow.stats.elapsed > SETTLE_SECONDS + 1.5:
        assert first.workers < NUM_CPUS, flow.stats  # the light stage left them idle: given back
    # busy is over the worker time the stage had, as its workers changed
    assert second.capacity_seconds > 0
    assert 0.0 < second.busy <= 1.0


def test_workers_the_user_chose_are_kept():
    flow = ezflow.Flow(range(200)).map(light, workers=2).map(heavy)
    assert flow.collect(progress=False) == [x * 2 for x in range(200)]
    first, second = flow.stats.stages
    assert (first.auto_workers, first.workers) == (False, 2)
    assert not second.auto_workers  # alone, it runs one worker per CPU as before
    assert second.workers == NUM_CPUS


def test_a_single_stage_and_thread_stages_are_outside_the_budget():
    flow = ezflow.Flow(range(50)).map(light).map(heavy, mode="thread")
    assert flow.collect(progress=False) == [x * 2 for x in range(50)]
    assert [s.auto_workers for s in flow.stats.stages] == [False, False]


class Napper:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        return nap(x)


def test_a_class_stage_that_grows_builds_its_class_in_the_new_worker():
    peaks = Peaks()
    flow = ezflow.Flow(range(400)).map(light).map(Napper)
    assert flow.collect(progress=peaks) == list(range(400))
    stage = flow.stats.stages[1]
    assert stage.auto_workers
    assert peaks.most["Napper"] > NUM_CPUS, peaks.most
    # every worker that ran items is in the insights, each with a process id
    assert all(w.pid for w in stage.worker_stats)


def test_budget_runs_keep_their_order_and_errors_under_moves():
    def bad(x: int) -> int:
        if x == 2500:
            raise ValueError(f"bad item {x}")
        return heavy(x)

    flow = ezflow.Flow(range(3000)).map(light).map(bad)
    with pytest.raises(ezflow.TaskError) as info:
        flow.collect(progress=False)
    err = info.value
    assert (err.stage, err.index) == ("bad", 2500)
    assert isinstance(err.__cause__, ValueError)
    got = ezflow.Flow(range(3000)).map(light).map(bad, errors="return").collect(progress=False)
    assert [g for i, g in enumerate(got) if i != 2500] == [x * 2 for x in range(3000) if x != 2500]
    assert isinstance(got[2500], ezflow.Failure)


def test_the_views_say_which_workers_follow_the_budget():
    from ezflow._views.figures import BUDGET_NOTE, summary

    flow = ezflow.Flow(range(100)).map(light).map(heavy)
    flow.collect(progress=False)
    text = summary(flow.stats)
    assert "process\u00d7" in text and " auto" in text and BUDGET_NOTE in text
    assert " auto" in repr(flow.stats)


def test_a_stage_that_waits_gets_workers_past_one_per_cpu():
    peaks = Peaks()
    flow = ezflow.Flow(range(400)).map(light).map(nap)
    assert flow.collect(progress=peaks) == list(range(400))
    # its workers sleep inside items: more of them, though the CPUs are no more
    assert NUM_CPUS < peaks.most["nap"] <= WAIT_FACTOR * NUM_CPUS, peaks.most
    assert peaks.most["light"] == NUM_CPUS


def test_the_panel_says_the_count_moves():
    from ezflow._views.panel import render_html

    flow = ezflow.Flow(range(100)).map(light).map(heavy)
    flow.collect(progress=False)
    html = render_html(flow.stats)
    assert "process\u00d7" in html and "underline dotted" in html  # the count is marked, the tooltip says why
    assert "running now. Process stages left at workers=None start with one worker per CPU" in html


def test_the_bars_say_how_many_workers_run_now():
    from ezflow._views.figures import stage_notes

    flow = ezflow.Flow(range(100)).map(light).map(heavy)
    flow.collect(progress=False)
    first, second = flow.stats.stages
    assert f"{second.workers} worker" in ", ".join(stage_notes(second, False))
    plain = ezflow.Flow(range(10)).map(light, workers=2).map(heavy, workers=2)
    plain.collect(progress=False)
    assert not any("auto" in n for n in stage_notes(plain.stats.stages[0], False))


@pytest.mark.skipif(NUM_CPUS < 2, reason="one CPU: one worker per stage is all there is")
def test_a_budget_that_fails_says_so_once_and_goes_back_to_the_static_split(monkeypatch, caplog):
    from ezflow._engine import budget

    looks: list[int] = []

    def step(self: budget.Budget) -> None:
        looks.append(1)
        if len(looks) == 1:
            for _, d in self.members:  # a first look that takes workers away
                budget._set(d, 1)
            return
        raise RuntimeError("cannot measure")

    monkeypatch.setattr(budget.Budget, "step", step)
    caplog.set_level("WARNING", logger="ezflow")
    n = 3000
    flow = ezflow.Flow(range(n)).map(light).map(heavy)
    assert flow.collect(progress=False) == [x * 2 for x in range(n)]
    assert len(looks) == 2
    assert [s.workers for s in flow.stats.stages] == [NUM_CPUS, NUM_CPUS]
    said = [r for r in caplog.records if "CPU budget failed" in r.getMessage()]
    assert len(said) == 1, caplog.text  # once, saying what failed (the budget thread ended before the run did)
    assert "RuntimeError: cannot measure" in said[0].getMessage() and said[0].exc_info is not None
