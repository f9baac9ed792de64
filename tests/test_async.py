"""Async stages: coroutine functions awaited `workers` at a time, from sync and async code."""

from __future__ import annotations

import asyncio
import time

import pytest

import ezflow


async def nap(x):
    await asyncio.sleep(0.2)
    return x * 2


async def fails_on_3(x):
    await asyncio.sleep(0)
    if x == 3:
        raise ValueError("three")
    return x


def test_coroutine_runs_concurrently():
    t0 = time.monotonic()
    got = ezflow.map(nap, range(100), workers=50, progress=False)
    took = time.monotonic() - t0
    assert got == [x * 2 for x in range(100)]
    assert took < 2.0, took  # serially this is 20 s; 50 at a time ~0.4 s


def test_async_is_default_mode_for_coroutines():
    flow = ezflow.Flow(range(3)).map(nap)
    assert flow.stages[0].mode == "async"
    with pytest.raises(ValueError, match="coroutine function"):
        ezflow.Flow(range(3)).map(nap, mode="process")


def test_async_errors_and_mixed_flow():
    got = ezflow.map(fails_on_3, range(6), errors="return", progress=False)
    assert isinstance(got[3], ezflow.Failure) and isinstance(got[3].error, ValueError)
    flow = (
        ezflow.Flow(range(20))
        .map(lambda x: x + 1, mode="process")
        .map(nap, workers=10)
        .filter(lambda x: x % 4 == 0, mode="thread")
    )
    assert flow.collect(progress=False) == [y for y in ((x + 1) * 2 for x in range(20)) if y % 4 == 0]


def test_async_timeout_fails_only_slow_item():
    async def maybe_slow(x):
        await asyncio.sleep(5 if x == 2 else 0.01)
        return x

    got = ezflow.map(maybe_slow, range(5), item_timeout=0.3, errors="return", progress=False)
    assert [g for i, g in enumerate(got) if i != 2] == [0, 1, 3, 4]
    assert isinstance(got[2].error, ezflow.ItemTimeout)


def test_acollect_and_async_for_inside_running_loop():
    async def main():
        flow = ezflow.Flow(range(10)).map(nap, workers=10)
        got = await flow.acollect(progress=False)
        seen = [x async for x in ezflow.Flow(range(5)).map(lambda x: x * 3, mode="thread")]
        return got, seen

    got, seen = asyncio.run(main())
    assert got == [x * 2 for x in range(10)] and seen == [0, 3, 6, 9, 12]


def test_retries_only_for_listed_errors():
    calls = {}

    def flaky(x):
        calls[x] = calls.get(x, 0) + 1
        if x == 1 and calls[x] < 3:
            raise ConnectionError("try again")
        if x == 2:
            raise KeyError("never retried")
        return x

    flow = ezflow.Flow(range(4)).map(flaky, mode="thread", retries=3, retry_on=ConnectionError, errors="return")
    got = flow.collect(progress=False)
    assert got[0] == 0 and got[1] == 1 and got[3] == 3
    assert isinstance(got[2], ezflow.Failure) and got[2].attempts == 1 and calls[2] == 1
    assert calls[1] == 3 and flow.stats[0].retries == 2


def test_a_plain_function_in_an_async_stage_says_how_to_fix_it():
    def blocking(x):
        return x * 2

    with pytest.raises(ezflow.TaskError, match=r"stage 'blocking' failed on item 0") as info:
        ezflow.map(blocking, range(3), mode="async", progress=False)
    cause = info.value.__cause__
    assert isinstance(cause, TypeError)
    assert "returned int, not an awaitable: define it with `async def`, or use mode='thread'" in str(cause)
    # a plain function that returns a coroutine is fine
    assert ezflow.map(lambda x: asyncio.sleep(0, x), range(3), mode="async", progress=False) == [0, 1, 2]
