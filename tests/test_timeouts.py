"""Per-item timeouts: a stuck item fails alone, the others are unaffected, in every mode."""

from __future__ import annotations

import time

import pytest

import ezflow


def stuck_on_two(x):
    if x == 2:
        time.sleep(30)  # stands for C code that ignores signals
    return x


def busy_c_loop_on_two(x):
    if x == 2:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.sleep(30)  # a C call: no Python signal handler runs inside it
    return x


def test_process_timeout_replaces_worker_and_fails_only_that_item():
    t0 = time.monotonic()
    got = ezflow.map(busy_c_loop_on_two, range(8), item_timeout=1.0, errors="return", progress=False)
    assert time.monotonic() - t0 < 15
    assert [g for i, g in enumerate(got) if i != 2] == [0, 1, 3, 4, 5, 6, 7]
    f = got[2]
    assert isinstance(f, ezflow.Failure) and isinstance(f.error, ezflow.ItemTimeout)
    assert isinstance(f.error, TimeoutError) and "item_timeout of 1s" in str(f.error)
    assert f.stage == "busy_c_loop_on_two" and f.index == 2


def test_process_timeout_raise_names_stage():
    with pytest.raises(ezflow.TaskError, match="stage 'stuck_on_two' failed on item 2.*ItemTimeout"):
        ezflow.map(stuck_on_two, range(4), item_timeout=0.5, progress=False)


def test_thread_timeout_fails_item_and_keeps_capacity():
    t0 = time.monotonic()
    got = ezflow.map(stuck_on_two, range(10), mode="thread", workers=2, item_timeout=0.5, errors="return", progress=False)
    assert time.monotonic() - t0 < 10
    assert isinstance(got[2], ezflow.Failure) and isinstance(got[2].error, ezflow.ItemTimeout)
    assert [g for i, g in enumerate(got) if i != 2] == [0, 1, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.no_dask("dask stages take no item_timeout")
def test_timeout_in_a_piece_of_several_items_blames_only_the_slow_one(mode):
    got = ezflow.map(
        mode.fn(stuck_on_two), range(6), workers=2, chunksize=3, item_timeout=0.5, errors="return", progress=False, **mode
    )
    assert [g for i, g in enumerate(got) if i != 2] == [0, 1, 3, 4, 5]
    assert isinstance(got[2], ezflow.Failure) and isinstance(got[2].error, ezflow.ItemTimeout)
    assert got[2].index == 2


# -- one meaning per name: timeout= is how long a caller waits, never the per-item limit --


@pytest.mark.parametrize(
    ("where", "call"),
    [
        ("ezflow.map", lambda: ezflow.map(abs, [1], timeout=1)),
        ("ezflow.imap", lambda: ezflow.imap(abs, [1], timeout=1)),
        ("Flow.map", lambda: ezflow.Flow([1]).map(abs, timeout=1)),
        ("Flow.filter", lambda: ezflow.Flow([1]).filter(bool, timeout=1)),
        ("Flow.flat_map", lambda: ezflow.Flow([1]).flat_map(list, timeout=1)),
    ],
)
def test_the_old_per_item_spelling_names_the_new_one(where, call):
    with pytest.raises(TypeError, match=rf"{where}\(\) got 'timeout': the per-item limit is now item_timeout="):
        call()


def test_a_misspelt_option_gets_a_suggestion():
    with pytest.raises(TypeError, match=r"ezflow.map\(\) got an unexpected keyword argument 'worker'; did you mean workers="):
        ezflow.map(abs, [1], worker=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'worker'"):
        ezflow.Flow([1]).map(abs, worker=2)


def test_timeout_still_means_how_long_a_caller_waits():
    flow = ezflow.Flow(range(5)).map(abs, mode="thread", item_timeout=5).batch(2, timeout=0.1)
    assert flow.stages[0].item_timeout == 5.0 and flow.stages[1].batch_timeout == 0.1
    assert flow.start(timeout=30, progress=False).wait(timeout=30) == [[0, 1], [2, 3], [4]]


def sleeps_on_seven(x):
    if x == 7:
        time.sleep(10)  # far past the limit: only a limit enforced on every attempt ends it in time
    return x


@pytest.mark.no_dask("dask stages take no item_timeout")
def test_every_attempt_has_the_limit(mode):
    got = ezflow.map(
        mode.fn(sleeps_on_seven), range(10), item_timeout=0.3, retries=2, errors="return", workers=2, progress=False, **mode
    )
    assert [g for i, g in enumerate(got) if i != 7] == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    f = got[7]
    assert isinstance(f, ezflow.Failure) and isinstance(f.error, ezflow.ItemTimeout), f
    assert f.attempts == 3 and f.index == 7


class _RaisesThenSleeps:
    """The first try raises, later ones overrun: each try is counted in a file (tries run in several processes)."""

    def __init__(self, path):
        self.path = path

    def __call__(self, x):
        if x != 3:
            return x
        with open(self.path, "a") as f:
            f.write("x")
        with open(self.path) as f:
            tries = len(f.read())
        if tries == 1:
            raise ValueError("first try")
        time.sleep(10)
        return x


def test_a_retry_inside_the_worker_has_the_limit_too(tmp_path):
    fn = _RaisesThenSleeps(str(tmp_path / "tries"))
    got = ezflow.map(fn, range(40), item_timeout=0.5, retries=2, errors="return", workers=2, chunksize=8, progress=False)
    assert [g for i, g in enumerate(got) if i != 3] == [i for i in range(40) if i != 3]
    f = got[3]
    assert isinstance(f, ezflow.Failure) and isinstance(f.error, ezflow.ItemTimeout), f
    assert f.attempts == 3  # raised, overran (the worker retried it), overran again (the parent did)
    assert (tmp_path / "tries").read_text() == "xxx"


def test_a_limit_does_not_cut_tiny_items_one_per_message(monkeypatch):
    from ezflow._executors import process

    sent = []
    task = process._task
    monkeypatch.setattr(process, "_task", lambda piece, *rest: sent.append(len(piece.items)) or task(piece, *rest))
    n = 20_000
    assert ezflow.map(abs, range(-n, 0), item_timeout=60, workers=2, progress=False) == list(range(n, 0, -1))
    assert sum(sent) == n
    assert len(sent) < n // 20, f"{len(sent)} messages for {n} items"
