"""Several iterables: `ezflow.map(fn, *iterables)` behaves as builtin `map` does, in every mode.

Builtin `map` is the reference: the same results, stopping at the shortest
iterable; a failure names the tuple of inputs; one iterable behaves exactly
as before; `Flow.map` keeps one input per item.
"""

from __future__ import annotations

import itertools
import operator
import os
import threading
import time

import pytest

import ezflow

pytestmark = pytest.mark.timeout(120)


def add3(a, b, c):
    return a * 100 + b * 10 + c


def divide(a, b):
    return a / b


class Scaled:
    """A class stage: built once per worker, then called with one item of each iterable."""

    def __init__(self):
        self.k = 1000

    def __call__(self, a, b):
        return self.k * a + b


# case -> a function making fresh inputs (generators and counters are read once)
CASES = {
    "equal lengths": (operator.add, lambda: ([1, 2, 3], [10, 20, 30])),
    "shortest first": (operator.add, lambda: ([1, 2], [10, 20, 30, 40])),
    "shortest last": (operator.sub, lambda: (range(10), [5, 4, 3])),
    "three, one a generator": (add3, lambda: (range(6), (x for x in range(9)), [7] * 6)),
    "an infinite one": (pow, lambda: ([2, 3, 4], itertools.count(1))),
    "one empty": (operator.add, lambda: ([1, 2, 3], [])),
    "tuples as items": (operator.add, lambda: ([(1,), (2,)], [(3,), (4,)])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_map_matches_builtin_map_in_every_mode(mode, case):
    fn, inputs = CASES[case]
    want = list(map(fn, *inputs()))
    assert ezflow.map(mode.fn(fn), *inputs(), progress=False, **mode) == want


def test_imap_matches_builtin_map_in_every_mode(mode):
    got = ezflow.imap(mode.fn(operator.mul), range(7), (x for x in range(3, 100)), progress=False, **mode)
    assert list(got) == list(map(operator.mul, range(7), range(3, 100)))


@pytest.mark.no_async("a class stage with an async __call__ is covered in test_async")
def test_a_class_stage_takes_one_argument_per_iterable(mode):
    got = ezflow.map(Scaled, [1, 2, 3], [4, 5, 6], workers=2, progress=False, **mode)
    assert got == [1004, 2005, 3006]


def test_a_failure_names_the_tuple_of_inputs(mode):
    got = ezflow.map(mode.fn(divide), [1, 2, 3], [1, 0, 3], errors="return", progress=False, **mode)
    assert got[0] == 1.0 and got[2] == 1.0
    failure = got[1]
    assert isinstance(failure, ezflow.Failure) and isinstance(failure.error, ZeroDivisionError)
    assert failure.item == (2, 0) and failure.index == 1 and failure.stage == "divide"
    with pytest.raises(ezflow.TaskError, match=r"stage 'divide' failed on item 1 \(\(2, 0\)\)") as info:
        ezflow.map(mode.fn(divide), [1, 2, 3], [1, 0, 3], progress=False, **mode)
    assert info.value.item == (2, 0) and info.value.index == 1


def test_zero_iterables_is_a_type_error_as_with_builtin_map():
    with pytest.raises(TypeError):
        list(map(abs))  # the reference
    for where, call in (("ezflow.map", ezflow.map), ("ezflow.imap", ezflow.imap)):
        with pytest.raises(TypeError, match=rf"{where}\(\) needs at least one iterable"):
            call(abs)


def test_a_non_iterable_among_several_is_named():
    with pytest.raises(TypeError, match=r"ezflow.map\(\) argument 3 must be an iterable, got int"):
        ezflow.map(operator.add, [1, 2], 5)


def test_one_iterable_is_unchanged():
    assert ezflow.map(abs, [-1, -2], mode="thread", progress=False) == [1, 2]
    flow = ezflow.Flow([-1, -2]).map(abs, mode="thread")
    assert flow.stages[0].fn is abs  # no wrapper: the same stage as before


def test_flow_map_keeps_one_input_per_item():
    pairs = list(zip([1, 2], [3, 4]))
    assert ezflow.Flow(pairs).map(len, mode="thread").collect(progress=False) == [2, 2]
    with pytest.raises(ezflow.TaskError, match="TypeError"):
        ezflow.Flow(pairs).map(operator.add, mode="thread").collect(progress=False)


def test_when_takes_one_argument_per_iterable_and_a_skipped_item_passes_as_its_tuple():
    got = ezflow.map(operator.add, [1, 2, 3], [10, 20, 30], when=lambda a, b: a != 2, mode="thread", progress=False)
    assert got == [11, (2, 20), 33]


def test_the_stage_is_named_after_the_function_and_sized_by_the_shortest():
    seen = []

    class Observer:
        def open(self, stats):
            seen.append(stats)

        def update(self, stats):
            pass

        def close(self, stats):
            seen.append(stats)

    got = ezflow.map(divide, [4, 6, 8], [2, 3, 4, 5, 6], mode="thread", progress=Observer())
    assert got == [2.0, 2.0, 2.0]
    assert seen[-1].stages[0].name == "divide"
    assert seen[0].stages[0].total == 3  # every iterable sized: the total is the shortest's length


def test_generators_are_read_lazily_and_together():
    reads = []

    def numbers(tag):
        for i in itertools.count():
            reads.append((tag, i))
            yield i

    it = ezflow.imap(operator.add, numbers("a"), numbers("b"), mode="thread", workers=1, progress=False)
    assert list(itertools.islice(it, 3)) == [0, 2, 4]
    it.close()
    # not drained: an endless pair of inputs stops when the caller stops, after a bounded read-ahead
    # (a few source chunks, each about SOURCE_CHUNK_SECONDS of reading: thousands of these cheap items)
    stopped_at = len(reads)
    assert stopped_at < 100_000
    time.sleep(0.2)
    assert len(reads) == stopped_at, "the inputs were still read after close()"


def test_lambdas_and_closures_travel_to_spawned_workers():
    offset = 7
    got = ezflow.map(lambda a, b: a * b + offset, [1, 2], [3, 4], start_method="spawn", workers=2, progress=False)
    assert got == [10, 15]


def _counted(calls_path):
    lock = threading.Lock()

    def f(a, b):
        with lock:
            fd = os.open(calls_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"{a},{b}\n".encode())
            os.close(fd)
        if b == 0:
            raise ZeroDivisionError(f"{a}/{b}")
        return a / b

    return f


def test_a_checkpoint_names_the_tuple_of_inputs(tmp_path):
    calls, ck = tmp_path / "calls.txt", tmp_path / "ck"
    f = _counted(str(calls))
    xs, ys = [1, 2, 3, 4], [1, 0, 3, 4]
    first = ezflow.map(f, xs, ys, mode="thread", errors="return", checkpoint=ck, checkpoint_failures=True)
    assert first[1].item == (2, 0)
    calls.unlink()
    again = ezflow.map(f, xs, ys, mode="thread", errors="return", checkpoint=ck, checkpoint_failures=True)
    assert not calls.exists()  # every result, the failure included, came from the checkpoint
    assert again[1].item == (2, 0) and [again[i] for i in (0, 2, 3)] == [1.0, 1.0, 1.0]
    # the same function over one iterable of pairs is another call: f(pair) is not f(a, b)
    pairs = ezflow.map(len, list(zip(xs, ys)), mode="thread", checkpoint=tmp_path / "ck2")
    assert pairs == [2, 2, 2, 2]
    # a longer second iterable: the stored prefix is kept, only the new tuple computed
    more = ezflow.map(f, [*xs, 10], [*ys, 5], mode="thread", errors="return", checkpoint=ck, checkpoint_failures=True)
    assert more[-1] == 2.0 and calls.read_text().splitlines() == ["10,5"]


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=25, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(
    st.lists(st.lists(st.integers(-1000, 1000), max_size=30), min_size=1, max_size=4),
    st.booleans(),
)
def test_property_same_as_builtin_map(columns, ordered):
    def fn(*args):
        return sum(args) * len(args)

    got = ezflow.map(fn, *columns, mode="thread", workers=3, ordered=ordered, chunksize=2, progress=False)
    want = list(map(fn, *columns))
    assert (got if ordered else sorted(got)) == (want if ordered else sorted(want))
