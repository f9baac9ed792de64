"""The behavioural suite of map/imap, run on every mode, with the builtins as reference."""

from __future__ import annotations

import itertools
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ezflow


def double(x):
    return x * 2


def fails_on_seven(x):
    if x == 7:
        raise ValueError(f"bad item {x}")
    return x


class CustomError(Exception):
    pass


def raises_custom(x):
    raise CustomError(f"custom {x}")


def test_map_matches_builtin(mode):
    data = list(range(1000))
    assert ezflow.map(mode.fn(double), data, progress=False, **mode) == list(map(double, data))


def test_lambda_and_closure_travel(mode):
    k = 3
    assert ezflow.map(mode.fn(lambda x: x + k), range(50), progress=False, **mode) == [x + 3 for x in range(50)]

    def local(x):
        return x * k

    assert ezflow.map(mode.fn(local), range(50), progress=False, **mode) == [x * 3 for x in range(50)]


def test_empty_input(mode):
    assert ezflow.map(mode.fn(double), [], progress=False, **mode) == []
    assert list(ezflow.imap(mode.fn(double), iter([]), progress=False, **mode)) == []


def test_generator_input_is_lazy_and_bounded(mode):
    taken = []

    def source():
        for i in itertools.count():
            taken.append(i)
            yield i

    got = list(itertools.islice(ezflow.imap(mode.fn(double), source(), progress=False, **mode), 100))
    assert got == [x * 2 for x in range(100)]
    # bounded in flight: the source was not drained far ahead of the consumer
    assert len(taken) < 100_000


def test_unordered_yields_everything(mode):
    got = ezflow.map(mode.fn(double), range(500), ordered=False, progress=False, **mode)
    assert sorted(got) == [x * 2 for x in range(500)]


def test_chunksize_fixed(mode):
    assert ezflow.map(mode.fn(double), range(101), chunksize=7, progress=False, **mode) == [x * 2 for x in range(101)]


def test_errors_raise_names_stage_item_and_keeps_type(mode):
    with pytest.raises(ezflow.TaskError) as info:
        ezflow.map(mode.fn(fails_on_seven), range(20), progress=False, **mode)
    err = info.value
    assert err.stage == "fails_on_seven"
    assert err.index == 7
    assert err.item == 7
    assert isinstance(err.__cause__, ValueError)
    assert "bad item 7" in str(err)
    assert "item 7" in str(err) and "fails_on_seven" in str(err)
    assert "raise ValueError" in err.traceback  # the worker's own traceback text


def test_custom_exception_type_is_kept(mode):
    with pytest.raises(ezflow.TaskError) as info:
        ezflow.map(mode.fn(raises_custom), [1], progress=False, **mode)
    assert type(info.value.__cause__) is CustomError


def test_errors_return_puts_failure_in_place(mode):
    got = ezflow.map(mode.fn(fails_on_seven), range(10), errors="return", progress=False, **mode)
    assert got[:7] == list(range(7)) and got[8:] == [8, 9]
    f = got[7]
    assert isinstance(f, ezflow.Failure)
    assert (f.item, f.index, f.stage) == (7, 7, "fails_on_seven")
    assert isinstance(f.error, ValueError) and "raise ValueError" in f.traceback


def test_errors_skip_drops_and_counts(mode):
    flow = ezflow.Flow(range(10)).map(mode.fn(fails_on_seven), errors="skip", **mode)
    assert flow.collect(progress=False) == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    s = flow.stats[0]
    assert (s.items_in, s.items_out, s.skipped, s.errors) == (10, 9, 1, 0)


def test_next_call_works_after_an_error(mode):
    with pytest.raises(ezflow.TaskError):
        ezflow.map(mode.fn(fails_on_seven), range(100), progress=False, **mode)
    assert ezflow.map(mode.fn(double), range(10), progress=False, **mode) == [x * 2 for x in range(10)]


def test_large_results(mode):
    # far past the pipe buffer: ezq's map hung here
    got = ezflow.map(mode.fn(lambda n: b"x" * n), [5_000_000] * 6, progress=False, **mode)
    assert [len(b) for b in got] == [5_000_000] * 6


def test_many_items(mode):
    assert sum(ezflow.map(mode.fn(double), range(20_000), progress=False, **mode)) == 2 * sum(range(20_000))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.integers(min_value=-10**6, max_value=10**6), max_size=300))
def test_property_thread(xs):
    assert ezflow.map(double, xs, mode="thread", progress=False) == list(map(double, xs))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.integers(min_value=-10**6, max_value=10**6), max_size=300), st.booleans())
def test_property_process(xs, ordered):
    got = ezflow.map(double, xs, mode="process", ordered=ordered, progress=False)
    want = list(map(double, xs))
    assert got == want if ordered else sorted(got) == sorted(want)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.integers(min_value=0, max_value=20), max_size=60))
def test_property_errors_return(xs):
    def f(x):
        return 100 // (x % 5)

    got = ezflow.map(f, xs, errors="return", progress=False)
    assert len(got) == len(xs)
    for x, g in zip(xs, got):
        if x % 5 == 0:
            assert isinstance(g, ezflow.Failure) and isinstance(g.error, ZeroDivisionError)
        else:
            assert g == f(x)


def test_warm_pool_is_reused():
    import os

    pids1 = set(ezflow.map(lambda _: os.getpid(), range(200), chunksize=1, progress=False))
    pids2 = set(ezflow.map(lambda _: os.getpid(), range(200), chunksize=1, progress=False))
    assert pids1 == pids2 and len(pids1) >= 1


def _fails_late(x: int) -> int:
    if x == 5:
        time.sleep(0.5)  # the first stage has long finished and given its pool back
        raise ValueError(x)
    return x


def test_a_run_that_fails_later_leaves_a_finished_stages_warm_pool_alive():
    from ezflow._executors import pool as _pool

    first = ezflow.Flow(range(20)).map(lambda x: x, workers=2).map(_fails_late, workers=1)
    with pytest.raises(ValueError):
        first.collect(progress=False)
    time.sleep(0.3)  # a kill sent when the run failed would have landed by now
    with _pool._lock:
        pools = [p for p in _pool._idle.values() if p.size == 2]
    assert pools, "the finished stage's pool went back to the warm cache"
    assert all(w.proc.is_alive() for p in pools for w in p.workers)
    # and the next run takes it and runs on it
    assert ezflow.Flow(range(20)).map(lambda x: x + 1, workers=2).collect(progress=False) == list(range(1, 21))


def test_workers_validation_message():
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        ezflow.map(double, [1], workers=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        ezflow.map(double, [1], mode="processes")
    with pytest.raises(ValueError, match="errors must be one of"):
        ezflow.map(double, [1], errors="ignore")
    with pytest.raises(TypeError, match="needs a callable"):
        ezflow.map(3, [1])


def test_tiny_tasks_are_chunked():
    flow = ezflow.Flow(range(100_000)).map(math.sqrt)
    assert len(flow.collect(progress=False)) == 100_000


SCRIPT_CLASSES = """
import dataclasses, sys
import ezflow

if __name__ == "__main__":
    sm = sys.argv[1]
    ezflow.map(abs, [-1, -2], workers=2, progress=False, start_method=sm)  # warm workers first

    @dataclasses.dataclass
    class Frame:  # defined after the workers started, as in a later notebook cell
        v: int

    out = ezflow.map(lambda f: Frame(f.v + 1), [Frame(1), Frame(2)], workers=2, progress=False,
                     start_method=sm)
    assert out == [Frame(2), Frame(3)] and all(type(o) is Frame for o in out), out
    flow = ezflow.Flow([Frame(5)]).map(lambda f: f.v, workers=1, start_method=sm)
    assert flow.collect(progress=False) == [5]
    # the class named after megabytes of payload (a bytes, many strings): still seen, still by value
    big = [(bytes(1_000_000), [f"{i:040d}" for i in range(20_000)], Frame(7))]
    assert ezflow.map(lambda t: t[2].v, big, workers=2, progress=False, start_method=sm) == [7]
    import numpy  # noqa: F401  (shared memory engages: ezflow's own pickler writes the items)
    assert ezflow.map(lambda t: t[2].v, big, workers=2, progress=False, start_method=sm) == [7]
    print("ok")
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_script_classes_made_after_the_workers_started_travel(tmp_path, start_method):
    import subprocess
    import sys

    script = tmp_path / "late_class.py"
    script.write_text(SCRIPT_CLASSES)
    out = subprocess.run([sys.executable, str(script), start_method], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("writer", ["MainScan", "Gather"])
def test_the_main_scan_skips_big_payloads_but_never_a_name(monkeypatch, writer):
    import pickle
    import sys

    from ezflow._transport import frames

    def scanned(obj):
        buf = getattr(frames, writer)()
        pickle.Pickler(buf, protocol=5).dump(obj)
        if writer == "Gather":
            data = b"".join(buf.parts)
            assert len(data) == len(buf)
        else:
            data = buf.getbuffer()
        assert pickle.loads(data) == obj
        return buf.names_main

    text = b"__main__" * 100_000  # 800 KB written as one payload: not searched
    assert not scanned(text)
    gathered = frames.Gather()
    pickle.Pickler(gathered, protocol=5).dump([text])
    assert any(part is text for part in gathered.parts)  # kept by reference: never copied here
    assert scanned(b"__main__")  # a small one is: a false alarm costs only speed
    assert not scanned([text, list(range(100_000))])

    class Frame:  # as if a script defined it
        pass

    Frame.__module__, Frame.__qualname__ = "__main__", "Frame"
    monkeypatch.setattr(sys.modules["__main__"], "Frame", Frame, raising=False)
    assert scanned([text, [f"{i:040d}" for i in range(20_000)], Frame])  # named after megabytes of frames


def test_functions_that_use_a_module_take_it_by_name(mode):
    # ezflow itself is outside site-packages in an editable install: dill would copy its
    # namespace (and fail on its locks); the worker imports it instead
    fn = lambda x: (ezflow.__version__, math.isqrt(x))  # noqa: E731
    assert ezflow.map(mode.fn(fn), [4, 9], workers=2, progress=False, **mode) == [(ezflow.__version__, 2), (ezflow.__version__, 3)]


def test_a_function_made_by_exec_goes_by_value():
    # exec() without a __name__ leaves __module__ None: by reference, pickle would look the name up
    # in a warm worker's own (older) copy of __main__ and could run another function of that name
    scope: dict = {}
    exec("def f(x):\n    return x + 5\n", scope)
    assert scope["f"].__module__ is None
    assert ezflow.map(scope["f"], range(4), workers=2, progress=False) == [5, 6, 7, 8]
    from ezflow._transport.serialize import _by_value

    assert _by_value(scope["f"])
