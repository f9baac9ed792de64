"""Consecutive plain process maps run fused: one chain in the same workers, still separate stages to the user.

Each test runs real worker processes. Where a figure is compared, the
reference is the same flow with fusion off (`plan.chain.FUSE = False`):
every stage in its own workers, as before chains existed.
"""

from __future__ import annotations

import os
import time

import pytest

import ezflow
from ezflow._core.env import NUM_CPUS
from ezflow._plan import chain

pytestmark = pytest.mark.timeout(120)


def tag(x: int) -> tuple[int, int]:
    return x, os.getpid()


def tag_again(t: tuple[int, int]) -> tuple[int, int, int]:
    return t[0] * 2, t[1], os.getpid()


def add_one(x: int) -> int:
    return x + 1


def picky(x: int) -> int:
    if x % 10 == 3:
        raise ValueError(f"no {x}")
    return x * 2


def refuse_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"no {x}")
    return x * 2


def nap(x: int) -> int:
    time.sleep(0.005)
    return x


def spin(x: int) -> int:
    s = 0
    for i in range(300):
        s += i
    return x


def stats_of(flow: ezflow.Flow) -> list[tuple]:
    return [(s.name, s.items_in, s.items_out, s.errors, s.skipped, s.state) for s in flow.stats]


@pytest.fixture
def separate(monkeypatch: pytest.MonkeyPatch):
    """Run a flow with every stage in its own workers (the reference)."""

    def run(build):
        with monkeypatch.context() as m:
            m.setattr(chain, "FUSE", False)
            flow = build()
            try:
                out = flow.collect(progress=False)
            except Exception as exc:
                return flow, exc
            return flow, out

    return run


def test_each_item_goes_through_every_step_in_one_worker():
    flow = ezflow.Flow(range(300)).map(tag).map(tag_again)
    got = flow.collect(progress=False)
    assert [g[0] for g in got] == [x * 2 for x in range(300)]
    assert all(pid_first == pid_second for _, pid_first, pid_second in got)  # never crossed to another process
    assert {g[1] for g in got} - {os.getpid()}, "the steps ran in worker processes"
    # still two stages to the user, each with its own figures
    first, second = flow.stats.stages
    assert (first.name, second.name) == ("tag", "tag_again")
    assert first.items_in == first.items_out == second.items_in == second.items_out == 300
    assert first.workers == second.workers == NUM_CPUS
    assert first.state == second.state == "done"
    assert first.fused_with == second.fused_with == ("tag", "tag_again")
    # the end-of-run summary says they shared their workers, and what busy means then
    from ezflow._views.figures import summary

    assert (f"fused: tag and tag_again run as one chain in the same {NUM_CPUS} worker processes, each item "
            "through both there") in summary(flow.stats)


def test_each_stage_keeps_its_own_busy_time():
    flow = ezflow.Flow(range(200)).map(add_one).map(nap)
    assert flow.collect(progress=False) == [x + 1 for x in range(200)]
    quick, slow = flow.stats.stages
    assert slow.busy_seconds >= 200 * 0.004  # its sleeps, timed in the worker
    assert quick.busy_seconds < slow.busy_seconds / 5


def test_stages_with_rules_or_chosen_workers_keep_their_own_workers():
    for second in (
        {"workers": 2},  # chosen by the user
        {"retries": 1},  # a per-item rule
        {"errors": "return"},  # another error policy than its neighbour's
    ):
        got = ezflow.Flow(range(400)).map(tag).map(tag_again, **second).collect(progress=False)
        assert [g[0] for g in got] == [x * 2 for x in range(400)]
        # each stage its own processes: no item ran both steps in one
        assert not any(a == b for _, a, b in got), second
    plain = ezflow.Flow(range(10)).map(tag).map(tag_again, workers=2)
    plain.collect(progress=False)
    assert [s.fused_with for s in plain.stats] == [(), ()]


def test_an_error_names_the_step_and_the_item_it_received(separate):
    def build() -> ezflow.Flow:
        return ezflow.Flow(range(100)).map(add_one).map(refuse_three).map(add_one)

    with pytest.raises(ValueError) as info:
        build().collect(progress=False)
    err = info.value
    assert isinstance(err, ezflow.TaskError)
    assert (err.stage, err.index, err.item) == ("refuse_three", 2, 3)  # item 2 became 3 in the first step
    assert "stage 'refuse_three' failed on item 2 (3)" in str(err)
    assert "no 3" in err.traceback and "refuse_three" in err.traceback
    _, ref = separate(build)
    assert (type(ref), ref.stage, ref.index, ref.item) == (type(err), err.stage, err.index, err.item)


@pytest.mark.parametrize("errors", ["return", "skip"])
def test_failures_and_figures_are_those_of_separate_stages(separate, errors):
    def build() -> ezflow.Flow:
        return (ezflow.Flow(range(100)).map(add_one, errors=errors).map(picky, errors=errors)
                .map(add_one, errors=errors))

    flow = build()
    got = flow.collect(progress=False)
    ref_flow, ref = separate(build)
    assert [(f.stage, f.index, f.item, type(f.error)) if isinstance(f, ezflow.Failure) else f for f in got] == [
        (f.stage, f.index, f.item, type(f.error)) if isinstance(f, ezflow.Failure) else f for f in ref
    ]
    assert stats_of(flow) == stats_of(ref_flow)
    assert flow.stats["picky"].errors + flow.stats["picky"].skipped == 10


def test_lambdas_and_closures_travel_by_value_under_spawn():
    k = 3
    got = (ezflow.Flow(range(50)).map(lambda x: x + k, start_method="spawn")
           .map(lambda x: x * k, start_method="spawn").collect(progress=False))
    assert got == [(x + k) * k for x in range(50)]


def test_a_failed_steps_item_that_cannot_travel_is_shown_by_its_repr():
    def make_gen(x: int):
        return (i for i in range(x))  # a generator: it does not pickle

    def refuse(g) -> int:
        raise ValueError("refused")

    flow = ezflow.Flow(range(3)).map(make_gen, errors="return").map(refuse, errors="return")
    got = flow.collect(progress=False)
    assert all(isinstance(f, ezflow.Failure) and f.stage == "refuse" for f in got)
    assert all("generator object" in repr(f.item) for f in got)
    assert all(isinstance(f.error, ValueError) for f in got)


def test_a_chain_that_waits_on_io_gets_more_workers():
    from ezflow._engine.budget import WAIT_FACTOR

    most: dict[str, int] = {}

    class Peaks:
        def open(self, stats):
            pass

        def update(self, stats):
            for s in stats:
                most[s.name] = max(most.get(s.name, 0), s.workers)

        def close(self, stats):
            self.update(stats)

    flow = ezflow.Flow(range(600)).map(spin).map(nap)
    assert flow.collect(progress=Peaks()) == list(range(600))
    # its workers sleep inside items: the budget sizes the chain as one stage
    assert NUM_CPUS < most["nap"] <= WAIT_FACTOR * NUM_CPUS, most
    assert most["spin"] == most["nap"]
    assert flow.stats["spin"].auto_workers and flow.stats["nap"].auto_workers
