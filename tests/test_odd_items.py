"""Odd items cannot hang a run or lose their report, in any mode (issue 15, point 5).

An exception whose __str__ or __repr__ raises, a CancelledError the item
raised itself, a coroutine that awaits a cancelled task: each is that
item's failure, reported with its stage, index, type name and traceback.
"""

from __future__ import annotations

import asyncio

import pytest

import ezflow

pytestmark = pytest.mark.timeout(60)


class StrExplodes(Exception):
    def __str__(self):
        raise RuntimeError("__str__ exploded")

    def __repr__(self):
        raise RuntimeError("__repr__ exploded")


def bad_str_on_2(x):
    if x == 2:
        raise StrExplodes("odd")
    return x


def cancelled_on_2(x):
    if x == 2:
        raise asyncio.CancelledError("raised by the item")
    return x


def _check_failure(f, error_type):
    assert isinstance(f, ezflow.Failure)
    assert f.index == 2 and f.stage.endswith("on_2")
    assert type(f.error).__name__ == error_type
    assert error_type in f.traceback  # the worker's traceback text survived
    assert error_type in repr(f)  # and so does the record's repr


@pytest.mark.parametrize("errors", ["raise", "return"])
def test_exception_whose_str_raises_is_reported(mode, errors):
    if errors == "return":
        got = ezflow.map(mode.fn(bad_str_on_2), range(5), errors="return", progress=False, **mode)
        assert [g for i, g in enumerate(got) if i != 2] == [0, 1, 3, 4]
        _check_failure(got[2], "StrExplodes")
        return
    with pytest.raises(ezflow.TaskError) as info:
        ezflow.map(mode.fn(bad_str_on_2), range(5), progress=False, **mode)
    msg = str(info.value)
    assert "stage 'bad_str_on_2' failed on item 2" in msg and "StrExplodes" in msg


def test_cancelled_error_raised_by_a_sync_item_is_its_failure(mode):
    got = ezflow.map(mode.fn(cancelled_on_2), range(5), errors="return", progress=False, **mode)
    assert [g for i, g in enumerate(got) if i != 2] == [0, 1, 3, 4]
    _check_failure(got[2], "CancelledError")


# -- async ----------------------------------------------------------------


async def async_bad_str_on_2(x):
    await asyncio.sleep(0)
    if x == 2:
        raise StrExplodes("odd")
    return x


async def async_cancelled_on_2(x):
    await asyncio.sleep(0)
    if x == 2:
        raise asyncio.CancelledError("raised by the item")
    return x


async def awaits_cancelled_on_2(x):
    if x == 2:
        inner = asyncio.ensure_future(asyncio.sleep(10))
        asyncio.get_running_loop().call_soon(inner.cancel)
        await inner  # raises CancelledError: the inner task was cancelled, not the item
    return x


@pytest.mark.parametrize("fn", [async_bad_str_on_2, async_cancelled_on_2, awaits_cancelled_on_2])
@pytest.mark.parametrize("errors", ["raise", "return"])
def test_async_odd_items_fail_alone_and_never_hang(fn, errors):
    error_type = "StrExplodes" if fn is async_bad_str_on_2 else "CancelledError"
    if errors == "return":
        got = ezflow.map(fn, range(5), workers=3, errors="return", progress=False)
        assert [g for i, g in enumerate(got) if i != 2] == [0, 1, 3, 4]
        _check_failure(got[2], error_type)
        return
    with pytest.raises(ezflow.TaskError, match=f"failed on item 2.*{error_type}"):
        ezflow.map(fn, range(5), workers=3, progress=False)


def test_async_item_cancelled_error_is_not_retried_by_default_but_can_be():
    calls = []

    async def flaky(x):
        calls.append(x)
        if len(calls) == 1:
            raise asyncio.CancelledError
        return x

    got = ezflow.map(flaky, [7], retries=2, errors="return", progress=False)
    assert isinstance(got[0], ezflow.Failure) and got[0].attempts == 1  # retry_on=(Exception,)
    calls.clear()
    assert ezflow.map(flaky, [7], retries=2, retry_on=BaseException, progress=False) == [7]


def test_async_stage_cancelled_by_ezflow_still_stops():
    async def slow(x):
        await asyncio.sleep(30)
        return x

    handle = ezflow.Flow(range(10)).map(slow, workers=4).start(progress=False)
    handle.cancel()
    assert handle.wait(timeout=10) == []  # ezflow's cancel is not ten item failures
    assert handle.done() and handle.stats.stages[0].errors == 0


class BuildsWithOddError:
    def __init__(self):
        raise StrExplodes("no model")

    def __call__(self, x):
        return x


def test_stage_that_cannot_start_reports_an_odd_exception(mode):
    with pytest.raises(ezflow.StageError, match="could not start.*StrExplodes") as info:
        ezflow.map(mode.fn(BuildsWithOddError), range(3), progress=False, **mode)
    assert "BuildsWithOddError" in str(info.value)
