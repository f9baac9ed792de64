"""Feeding a running flow: put/close, priorities, submit and await process()."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import ezflow


def square(x):
    return x * x


def test_put_and_close_feed_a_running_flow(mode):
    handle = ezflow.Flow().map(mode.fn(square), **mode).start(progress=False)
    for i in range(20):
        handle.put(i)
    handle.close()
    assert handle.wait(60) == [i * i for i in range(20)]


def test_fixed_source_cannot_be_fed():
    handle = ezflow.Flow([1]).map(square, mode="thread").start(progress=False)
    with pytest.raises(TypeError, match="fixed source"):
        handle.put(2)
    handle.wait(10)


def test_sourceless_flow_needs_start():
    with pytest.raises(TypeError, match="has no source"):
        ezflow.Flow().map(square).collect()


def test_higher_priority_items_are_taken_first():
    order = []
    busy, go = threading.Event(), threading.Event()

    def record(x):
        order.append(x)
        if x == "first":
            busy.set()
            go.wait(30)  # the rest is put while the only worker holds "first"
        return x

    flow = ezflow.Flow().map(record, mode="thread", workers=1, ordered=False)
    handle = flow.start(progress=False)
    handle.put("first")
    assert busy.wait(30)  # "first" is being processed; the rest wait in the feed
    for i in range(5):
        handle.put(f"low{i}", priority=0)
    handle.put("urgent", priority=10)
    go.set()
    handle.close()
    handle.wait(30)
    assert order[0] == "first"
    assert order.index("urgent") < order.index("low1")


def test_process_many_concurrent_requests_from_asyncio(mode):
    handle = ezflow.Flow().map(mode.fn(square), errors="return", **mode).filter(lambda y: y != 49, mode="thread").start(progress=False)

    async def main():
        results = await asyncio.gather(*(handle.process(i, timeout=30) for i in range(100)))
        return results

    results = asyncio.run(main())
    assert results == [None if i == 7 else i * i for i in range(100)]
    handle.close()
    assert handle.wait(30) == []  # results delivered through process() are not kept twice


def boom(x):
    if x == "bad":
        raise ValueError("bad request")
    return x


def test_process_raises_task_error_for_failed_item_and_times_out():
    handle = ezflow.Flow().map(boom, mode="thread", errors="return").map(lambda x: (time.sleep(2), x)[1] if x == "slow" else x, mode="thread").start(progress=False)

    async def main():
        ok = await handle.process("fine", timeout=10)
        with pytest.raises(ezflow.TaskError, match="bad request"):
            await handle.process("bad", timeout=10)
        with pytest.raises(TimeoutError, match="within 0.2s"):
            await handle.process("slow", timeout=0.2)
        return ok

    assert asyncio.run(main()) == "fine"
    handle.close()
    handle.wait(30)


def test_nothing_left_pending_after_the_flow_stops():
    started, release = threading.Event(), threading.Event()

    def stuck(x):
        started.set()
        release.wait(30)

    handle = ezflow.Flow().map(stuck, mode="thread", workers=1).start(progress=False)
    futs = [handle.submit(i) for i in range(3)]
    assert started.wait(30)  # one is taken; the others wait
    threading.Timer(0.2, release.set).start()  # a thread worker ends with its item
    handle.cancel()
    release.set()
    for f in futs:
        with pytest.raises(ezflow.FlowStopped, match="cancelled before this item"):
            f.result(timeout=5)


def odd(x: int) -> bool:
    return x % 2 == 1


@pytest.mark.parametrize("ordered", [True, False])
def test_a_submitted_item_that_gives_no_result_gets_none_even_at_the_end(mode, ordered):
    # the last items are dropped: no later result tells an ordered flow so, the flow's end does
    handle = (
        ezflow.Flow()
        .map(mode.fn(square), ordered=ordered, errors="skip", **mode)
        .filter(mode.fn(odd), ordered=ordered, **mode)
        .start(progress=False)
    )
    futs = {x: handle.submit(x) for x in range(1, 9)}
    handle.close()
    handle.wait(60)
    assert {x: f.result(10) for x, f in futs.items()} == {x: x * x if x % 2 else None for x in range(1, 9)}


def test_flow_over_an_ezflow_q():
    q = ezflow.Q(kind="thread")
    for i in range(5):
        q.put(i)
    q.end()
    assert ezflow.Flow(q).map(square, mode="thread").collect(progress=False) == [0, 1, 4, 9, 16]


@pytest.mark.no_dask("rate= is enforced by local stages only")
def test_rate_limit_is_shared_across_workers(mode):
    stamps = ezflow.map(mode.fn(lambda _: time.monotonic()), range(21), rate=20, workers=2, progress=False, **mode)
    stamps.sort()
    assert stamps[-1] - stamps[0] >= 0.9  # 20 intervals at 20/s: about 1 s whatever the workers
