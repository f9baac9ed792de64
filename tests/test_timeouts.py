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
