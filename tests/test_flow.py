"""Multi-stage flows: order through filters and flat_maps, batching, class stages, stats."""

from __future__ import annotations

import itertools
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ezflow


def inc(x):
    return x + 1


def is_even(x):
    return x % 2 == 0


def pair(x):
    return [x, -x]


def reference(xs):
    out = []
    for x in xs:
        y = x + 1
        if y % 2 == 0:
            out.extend(pair(y * 3))
    return out


def test_three_stages_match_serial(mode):
    xs = list(range(300))
    flow = ezflow.Flow(xs).map(mode.fn(inc), **mode).filter(mode.fn(is_even), **mode).map(mode.fn(lambda y: y * 3), **mode).flat_map(mode.fn(pair), **mode)
    assert flow.collect(progress=False) == reference(xs)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.integers(-1000, 1000), max_size=200), st.sampled_from(["thread", "process"]))
def test_property_order_through_filter_and_flat_map(xs, m):
    flow = ezflow.Flow(xs).map(inc, mode=m).filter(is_even, mode=m).map(lambda y: y * 3, mode="thread").flat_map(pair, mode=m)
    assert flow.collect(progress=False) == reference(xs)


def test_modes_mix_in_one_flow():
    flow = (
        ezflow.Flow(range(100))
        .map(inc, mode="thread", workers=4, name="download")
        .map(lambda x: (x, os.getpid()), mode="process", name="decode")
        .map(lambda t: t[0], mode="thread", name="write")
    )
    assert flow.collect(progress=False) == list(range(1, 101))
    assert [s.name for s in flow.stats] == ["download", "decode", "write"]
    assert [s.mode for s in flow.stats] == ["thread", "process", "thread"]


def test_unordered_flow_keeps_every_item():
    flow = ezflow.Flow(range(200)).map(inc, ordered=False).filter(is_even, ordered=False, mode="thread")
    assert sorted(flow.collect(progress=False)) == [x for x in range(1, 201) if x % 2 == 0]


def test_builders_return_new_flows():
    base = ezflow.Flow([1, 2, 3])
    a = base.map(inc)
    b = base.filter(is_even)
    assert base.stages == ()
    assert [s.kind for s in a.stages] == ["map"] and [s.kind for s in b.stages] == ["filter"]
    assert a.collect(progress=False) == [2, 3, 4]
    assert a.collect(progress=False) == [2, 3, 4]  # a flow over a list can run again


def test_duplicate_stage_names_get_suffixes():
    flow = ezflow.Flow([1]).map(inc).map(inc).map(inc)
    assert [s.name for s in flow.stages] == ["inc", "inc_2", "inc_3"]


def test_when_passes_other_items_untouched(mode):
    flow = ezflow.Flow(range(10)).map(mode.fn(lambda x: x * 100), when=lambda x: x % 3 == 0, **mode)
    assert flow.collect(progress=False) == [x * 100 if x % 3 == 0 else x for x in range(10)]


# -- batching ---------------------------------------------------------------


def test_batch_sizes_and_unbatch(mode):
    flow = ezflow.Flow(range(10)).batch(4)
    assert flow.collect(progress=False) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    flow = ezflow.Flow(range(10)).batch(3).map(mode.fn(sum), **mode).batch(2)
    assert flow.collect(progress=False) == [[3, 12], [21, 9]]
    flow = ezflow.Flow(range(10)).batch(3).map(mode.fn(lambda b: [x * 2 for x in b]), **mode).unbatch()
    assert flow.collect(progress=False) == [x * 2 for x in range(10)]


def test_batch_timeout_flushes_partial_batch_from_slow_source():
    def slow_source():
        for i in range(6):
            yield i
            if i == 2:
                time.sleep(1.0)  # long pause after three items

    arrivals = []
    for batch in ezflow.Flow(slow_source()).batch(100, timeout=0.2).iter(progress=False):
        arrivals.append((time.monotonic(), batch))
    batches = [b for _, b in arrivals]
    assert batches == [[0, 1, 2], [3, 4, 5]]
    # the first partial batch came out during the pause, not at the end
    assert arrivals[1][0] - arrivals[0][0] > 0.5


def test_batch_stage_sends_one_message_per_batch():
    seen = ezflow.Flow(range(64)).batch(16).map(len, mode="process", chunksize=1).collect(progress=False)
    assert seen == [16, 16, 16, 16]


# -- class stages -----------------------------------------------------------


class Model:
    """A stateful stage: built once per worker, inside the worker."""

    def __init__(self):
        self.pid = os.getpid()
        self.thread = threading.get_ident()
        self.token = object()

    def __call__(self, x):
        return (x, self.pid, self.thread, id(self.token))

    def close(self):
        pass


def test_class_stage_built_once_per_worker_inside_it(mode):
    got = ezflow.Flow(range(200)).map(mode.fn(Model), workers=2, chunksize=1, **mode).collect(progress=False)
    assert [g[0] for g in got] == list(range(200))
    instances = {g[1:] for g in got}
    if mode.get("mode") == "async":  # coroutines on one event loop share one instance, built in its thread
        assert len(instances) == 1
        assert all(pid == os.getpid() and tid != threading.get_ident() for pid, tid, _ in instances)
        return
    assert 1 <= len(instances) <= 2  # one per worker
    if mode.get("mode") == "thread":
        assert all(tid != threading.get_ident() for _, tid, _ in instances)
    else:  # process workers, or dask workers (processes of the cluster)
        assert all(pid != os.getpid() for pid, _, _ in instances)


class Broken:
    def __init__(self):
        raise RuntimeError("model file missing")

    def __call__(self, x):
        return x


def test_class_stage_that_fails_to_build_fails_before_consuming_input(mode):
    taken = []

    def source():
        for i in range(10):
            taken.append(i)
            yield i

    with pytest.raises(ezflow.StageError, match="stage 'Broken' could not start.*model file missing"):
        ezflow.Flow(source()).map(mode.fn(Broken), **mode).collect(progress=False)
    assert taken == []


def make_closing_stage(log_path):
    class Closes:
        path = str(log_path)

        def __init__(self):
            self.n = 0

        def __call__(self, x):
            self.n += 1
            return x

        def close(self):
            with open(self.path, "a") as f:
                f.write(f"{self.n}\n")

    return Closes


def test_class_close_called_when_worker_finishes(mode, tmp_path):
    log = tmp_path / "close.log"
    ezflow.Flow(range(50)).map(mode.fn(make_closing_stage(log)), workers=2, **mode).collect(progress=False)
    counts = [int(n) for n in log.read_text().split()]
    instances = 1 if mode.get("mode") == "async" else 2  # async workers share the stage's one instance
    assert len(counts) == instances and sum(counts) == 50


class FailsToClose:
    def __call__(self, x):
        return x

    def close(self):
        raise OSError("flush failed")


def test_close_error_is_raised(mode):
    with pytest.raises(ezflow.StageError, match="close.. raised OSError: flush failed"):
        ezflow.Flow(range(5)).map(mode.fn(FailsToClose), workers=1, **mode).collect(progress=False)


# -- backpressure -----------------------------------------------------------


def test_infinite_source_with_slow_last_stage_stays_bounded():
    produced = itertools.count()

    def source():
        while True:
            yield next(produced)

    def slow(x):
        time.sleep(0.002)
        return x

    flow = ezflow.Flow(source()).map(inc, mode="process").map(slow, mode="thread", workers=2)
    got = list(itertools.islice(flow.iter(progress=False), 300))
    assert got == list(range(1, 301))
    # the source ran ahead of the consumer by a bounded amount only
    assert next(produced) < 100_000


# -- errors across stages ----------------------------------------------------


def boom_on_3(x):
    if x == 3:
        raise KeyError(x)
    return x


def test_failure_passes_through_later_stages(mode):
    flow = ezflow.Flow(range(6)).map(mode.fn(boom_on_3), errors="return", **mode).map(mode.fn(lambda x: x * 10), **mode).filter(mode.fn(lambda x: True), **mode)
    got = flow.collect(progress=False)
    assert got[:3] == [0, 10, 20] and got[4:] == [40, 50]
    assert isinstance(got[3], ezflow.Failure) and got[3].stage == "boom_on_3" and got[3].index == 3


def test_error_in_second_stage_names_it():
    flow = ezflow.Flow(range(10)).map(inc).map(boom_on_3, name="second")
    with pytest.raises(ezflow.TaskError, match="stage 'second' failed on item 2"):
        flow.collect(progress=False)
    assert flow.stats.state == "failed"
    assert flow.stats["second"].state == "failed"


def test_index_after_filter_and_flat_map_is_source_index():
    flow = ezflow.Flow(range(10)).filter(lambda x: x >= 5).flat_map(lambda x: [x, x]).map(boom_on_3, errors="return")
    got = flow.collect(progress=False)
    assert got == [5, 5, 6, 6, 7, 7, 8, 8, 9, 9]
    flow = ezflow.Flow(range(10)).filter(lambda x: x > 1).map(boom_on_3, errors="return")
    f = [g for g in flow.collect(progress=False) if isinstance(g, ezflow.Failure)][0]
    assert f.index == 3


# -- stats ------------------------------------------------------------------


def test_stats_add_up(mode):
    flow = (
        ezflow.Flow(range(100))
        .map(mode.fn(boom_on_3), errors="skip", **mode)
        .filter(mode.fn(is_even), **mode)
        .map(mode.fn(lambda x: 1 // (x % 10)), errors="return", **mode)
    )
    out = flow.collect(progress=False)
    st = flow.stats
    assert st.state == "done" and st.elapsed > 0
    for s in st:
        assert s.in_flight == 0 and s.state == "done"
        assert s.items_in == s.items_out + s.filtered + s.errors + s.skipped, s
    a, b, c = st
    assert (a.items_in, a.skipped, a.items_out) == (100, 1, 99)
    assert (b.items_in, b.filtered) == (99, 49)
    assert c.errors == 10 and len(out) == 50
    assert "boom_on_3" in repr(st) and "items/s" in repr(st)
    assert st["is_even"] is b


def test_stats_readable_while_running():
    def slow(x):
        time.sleep(0.01)
        return x

    flow = ezflow.Flow(range(100)).map(slow, mode="thread", workers=2)
    seen = []
    for i, _ in enumerate(flow.iter(progress=False)):
        if i == 50:
            seen.append(flow.stats)
    mid = seen[0]
    assert mid.state == "running" and 0 < mid[0].items_in <= 100
    assert flow.stats.state == "done" and flow.stats[0].items_out == 100
