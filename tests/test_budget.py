"""The CPU budget: process stages left at workers=None share the CPUs, and workers follow the bottleneck.

The policy (`decide`) is plain arithmetic and is tested as such; the runs
below use real worker processes and check what the stats say the budget
did, never how fast it was.
"""

from __future__ import annotations

import pytest

import ezflow
from ezflow._core.env import NUM_CPUS
from ezflow._engine.budget import Look, share, targets, waits_elsewhere
from ezflow._executors.meter import machine_idle_seconds, proc_cpu_seconds

pytestmark = pytest.mark.timeout(120)


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


class Heavy:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        return heavy(x)


def look(workers: int, busy: float, *, cap: int = 4, cpu_per_busy: float = 1.0, waiting: bool = True,
         blocked: float = 0.0) -> Look:
    return Look(workers=workers, cap=cap, cpu=busy * workers * cpu_per_busy, busy=busy,
                cpu_per_busy=cpu_per_busy, waiting=waiting, blocked=blocked)


# -- the policy ------------------------------------------------------------------------------


def test_first_split_is_even_and_gives_every_stage_a_worker():
    # (a run's first split shares START_SHARE workers per CPU: share(2 * cpus, stages))
    assert share(8, 3) == [3, 3, 2]
    assert share(2, 2) == [1, 1]
    assert share(2, 3) == [1, 1, 1]  # more stages than CPUs: one each
    assert sum(share(64, 5)) == 64


def test_workers_follow_the_cpu_each_stage_uses():
    # decode 1.4 ms, featurize 0.6 ms per item on 2 CPUs: 1.4 and 0.6 CPUs' worth
    assert targets([0.98, 0.42], 2, [2, 2]) == [2, 1]
    # a light stage and a heavy one: the heavy one gets every CPU, the light one keeps one worker
    assert targets([0.04, 0.96], 2, [2, 2]) == [1, 2]
    # three equal stages on two CPUs: one each (2/3 of a CPU each, rounded up)
    assert targets([0.66, 0.67, 0.67], 2, [2, 2, 2]) == [1, 1, 1]
    # 64 CPUs, a stage 3 times the others: 12.8, 38.4, 12.8 rounded up (never less than the share)
    assert targets([1.0, 3.0, 1.0], 64, [64] * 3) == [13, 39, 13]


def test_shares_are_capped_and_noise_does_not_round_up():
    assert targets([0.0, 1.0], 8, [8, 4]) == [1, 4]  # cap: one worker per CPU at most
    assert targets([1.02, 0.98], 2, [2, 2]) == [1, 1]  # 1.02 CPUs is one worker's worth
    assert targets([0.0, 0.0], 2, [2, 2]) is None  # nothing measured: keep the split


def test_extra_workers_add_to_the_share():
    assert targets([0.04, 0.96], 4, [4, 4], extra=[2, 0]) == [3, 4]


def test_a_stage_that_waits_on_io_gets_a_worker_while_cpus_are_idle():
    io = look(2, 0.97, cpu_per_busy=0.05)
    assert waits_elsewhere(io, idle=0.7)
    assert not waits_elsewhere(io, idle=0.1)  # the CPUs are busy: its workers may be waiting for one
    assert not waits_elsewhere(io, idle=None)  # not measured: no growth
    assert not waits_elsewhere(look(2, 0.97), idle=0.7)  # CPU-bound: its share says it all
    assert not waits_elsewhere(look(2, 0.6, cpu_per_busy=0.05), idle=0.7)  # not busy
    assert not waits_elsewhere(look(2, 0.97, cpu_per_busy=0.05, waiting=False), idle=0.7)
    assert not waits_elsewhere(look(2, 0.97, cpu_per_busy=0.05, blocked=0.5), idle=0.7)
    assert not waits_elsewhere(look(4, 0.97, cap=4, cpu_per_busy=0.05), idle=0.7)


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


# -- real runs ---------------------------------------------------------------------------------


def test_the_budget_moves_workers_to_the_heavy_stage():
    n = 3000
    flow = ezflow.Flow(range(n)).map(light).map(heavy)
    assert flow.collect(progress=False) == [x * 2 for x in range(n)]
    first, second = flow.stats.stages
    assert first.auto_workers and second.auto_workers
    assert 1 <= first.workers <= NUM_CPUS and 1 <= second.workers <= NUM_CPUS
    if NUM_CPUS >= 2:
        assert second.workers > first.workers, flow.stats  # the heavy stage got the light one's share
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


def test_a_class_stage_that_grows_builds_its_class_in_the_new_worker():
    n = 3000
    flow = ezflow.Flow(range(n)).map(light).map(Heavy)
    assert flow.collect(progress=False) == [x * 2 for x in range(n)]
    heavy_stage = flow.stats.stages[1]
    assert heavy_stage.auto_workers
    if NUM_CPUS >= 2:
        assert heavy_stage.workers >= 2
    # every worker that ran items is in the insights, each with a process id
    assert all(w.pid for w in heavy_stage.worker_stats)


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


@pytest.mark.skipif(NUM_CPUS < 2, reason="one CPU: one worker per stage is all there is")
def test_a_stage_that_waits_gets_workers_beyond_its_cpu_share():
    peaks = Peaks()
    flow = ezflow.Flow(range(400)).map(light).map(nap)
    assert flow.collect(progress=peaks) == list(range(400))
    # by CPU it would keep one worker; its workers are busy waiting while the CPUs idle
    assert peaks.most["nap"] == NUM_CPUS, peaks.most


def test_the_panel_says_the_count_moves():
    from ezflow._views.panel import render_html

    flow = ezflow.Flow(range(100)).map(light).map(heavy)
    flow.collect(progress=False)
    html = render_html(flow.stats)
    assert "process\u00d7" in html and "underline dotted" in html  # the count is marked, the tooltip says why
    assert "running now. Process stages left at workers=None share the CPUs" in html


def test_the_bars_say_how_many_workers_run_now():
    from ezflow._views.figures import stage_notes

    flow = ezflow.Flow(range(100)).map(light).map(heavy)
    flow.collect(progress=False)
    first, second = flow.stats.stages
    assert f"{second.workers} worker" in ", ".join(stage_notes(second, False))
    plain = ezflow.Flow(range(10)).map(light, workers=2).map(heavy, workers=2)
    plain.collect(progress=False)
    assert not any("auto" in n for n in stage_notes(plain.stats.stages[0], False))
