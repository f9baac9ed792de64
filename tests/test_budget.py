"""The CPU budget: process stages left at workers=None share the CPUs, and workers follow the bottleneck.

The policy (`decide`) is plain arithmetic and is tested as such; the runs
below use real worker processes and check what the stats say the budget
did, never how fast it was.
"""

from __future__ import annotations

import pytest

import ezflow
from ezflow._core.env import NUM_CPUS
from ezflow._engine.budget import Look, decide, share
from ezflow._executors.elastic import proc_cpu_seconds

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
    built = 0

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: int) -> int:
        self.calls += 1
        return heavy(x)


def look(workers: int, busy: float, *, cap: int = 4, waiting: bool = True, blocked: float = 0.0, running: bool = True):
    return Look(workers=workers, cap=cap, busy=busy, waiting=waiting, blocked=blocked, running=running)


# -- the policy ------------------------------------------------------------------------------


def test_first_split_is_even_and_gives_every_stage_a_worker():
    assert share(8, 3) == [3, 3, 2]
    assert share(2, 2) == [1, 1]
    assert share(2, 3) == [1, 1, 1]  # more stages than CPUs: one each
    assert sum(share(64, 5)) == 64


def test_a_waiting_stage_gives_a_worker_to_the_bottleneck():
    looks = [look(2, 0.2, blocked=0.6), look(2, 0.98), look(2, 0.3)]
    assert decide(looks, cpu_share=1.0) == (0, 1)  # the idlest donor: stage 0 (blocked on its output)


def test_no_donor_and_idle_cpus_start_one_more_worker():
    # the bottleneck's workers wait on something else (I/O): one more takes no core from anyone
    assert decide([look(1, 0.2, blocked=0.5), look(1, 0.99)], cpu_share=0.4) == (None, 1)


def test_no_donor_and_busy_cpus_move_nothing():
    # three CPU-bound stages on two CPUs: every one is busy, the CPUs are full, nothing to gain
    assert decide([look(1, 0.99), look(1, 0.97), look(1, 0.98)], cpu_share=0.99) is None
    assert decide([look(1, 0.2, blocked=0.5), look(1, 0.99)], cpu_share=None) is None  # unmeasured: no growth


def test_a_donor_keeps_enough_workers_not_to_need_one_back():
    # 3 workers at 60%: 1.8 workers' work would be 90% of 2, needy again next look: keep them
    assert decide([look(3, 0.6, waiting=False), look(1, 0.99)], cpu_share=1.0) is None
    # 3 workers at 40%: 1.2 workers' work fits in 2 at 60%: one can go
    assert decide([look(3, 0.4, waiting=False), look(1, 0.99)], cpu_share=1.0) == (0, 1)


def test_takers_must_have_waiting_items_room_downstream_and_room_to_grow():
    assert decide([look(2, 0.1), look(2, 0.99, waiting=False)], cpu_share=0.2) is None  # nothing waits
    assert decide([look(2, 0.1), look(2, 0.99, blocked=0.5)], cpu_share=0.2) is None  # held back downstream
    assert decide([look(2, 0.1), look(4, 0.99, cap=4)], cpu_share=0.2) is None  # one per CPU already


def test_a_finished_stage_gives_its_workers_up():
    assert decide([look(3, 0.0, running=False, waiting=False), look(1, 0.99)], cpu_share=1.0) == (0, 1)


def test_cpu_seconds_of_a_process_are_read_from_proc():
    import os

    used = proc_cpu_seconds(os.getpid())
    if used is None:
        pytest.skip("no /proc here")
    spin(2_000_000)
    assert proc_cpu_seconds(os.getpid()) > used
    assert proc_cpu_seconds(2**22 + 12345) is None  # no such process


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
