"""`ezflow.Executor` behaves as `concurrent.futures.ProcessPoolExecutor` does, and gains ezflow's workers.

One behavioural suite, run on ezflow's Executor (processes under each start method, threads)
and on the standard library's ProcessPoolExecutor as the reference: same results, same
exception types, timeouts, cancellation, as_completed / wait, run_in_executor. Then what
only ezflow does: lambdas under spawn, shared numpy arrays, a SIGKILLed worker failing only
its own future. conftest's autouse fixture fails any test that leaves a process or a
/dev/shm segment behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import operator
import os
import signal
import threading
import time
import traceback
from pathlib import Path

import pytest

import ezflow

pytestmark = pytest.mark.timeout(120)


def square(x: int) -> int:
    return x * x


def fail_on_3(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad {x}")
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def touch(path: str) -> str:
    time.sleep(0.05)
    Path(path).touch()
    return path


def kill_self(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def pid(_: object = None) -> int:
    return os.getpid()


KINDS = [
    pytest.param(("ezflow", {"start_method": "fork"}), id="ezflow-fork"),
    pytest.param(("ezflow", {"start_method": "spawn"}), id="ezflow-spawn"),
    pytest.param(("ezflow", {"start_method": "forkserver"}), id="ezflow-forkserver"),
    pytest.param(("ezflow", {"mode": "thread"}), id="ezflow-thread"),
    pytest.param(("reference", {}), id="ProcessPoolExecutor"),
]


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest):
    """Return a factory of executors of one kind: ``make(max_workers)``."""
    kind, opts = request.param
    if kind == "reference":
        import multiprocessing

        return lambda n=2: cf.ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"))
    return lambda n=2: ezflow.Executor(n, **opts)


# -- the behavioural suite: ezflow and the reference alike -----------------------------------


def test_submit_and_map_give_the_same_results(make):
    with make() as ex:
        assert ex.submit(square, 7).result(timeout=60) == 49
        assert ex.submit(operator.add, 2, 3).result(timeout=60) == 5
        assert list(ex.map(square, range(20))) == [x * x for x in range(20)]
        # several iterables, zipped, stopping at the shortest: as builtin map
        assert list(ex.map(operator.add, [1, 2, 3], [10, 20, 30, 40])) == [11, 22, 33]
        assert list(ex.map(square, [])) == []


def test_a_failed_call_raises_its_original_type(make):
    with make() as ex:
        fut = ex.submit(fail_on_3, 3)
        with pytest.raises(ValueError, match="bad 3"):
            fut.result(timeout=60)
        assert isinstance(fut.exception(), ValueError)
        with pytest.raises(ValueError, match="bad 3"):
            list(ex.map(fail_on_3, range(6)))
        assert ex.submit(square, 2).result(timeout=60) == 4  # the executor goes on


def test_result_timeout_raises_timeout_error(make):
    with make() as ex:
        fut = ex.submit(nap, 0.5)
        with pytest.raises(TimeoutError):
            fut.result(timeout=0.01)
        assert fut.result(timeout=60) == 0.5


def test_map_timeout_raises_from_the_iterator(make):
    with make(1) as ex:
        ex.submit(square, 1).result(timeout=60)  # workers started: the deadline is about the calls
        it = ex.map(nap, [0.0, 2.0, 2.0], timeout=0.5)
        assert next(it) == 0.0
        with pytest.raises(TimeoutError):
            list(it)


def test_a_waiting_call_can_be_cancelled_and_never_runs(make, tmp_path):
    with make(1) as ex:
        first = ex.submit(nap, 0.5)
        files = [str(tmp_path / f"{i}") for i in range(12)]
        futures = [ex.submit(touch, f) for f in files]
        deadline = time.monotonic() + 60
        while not first.running() and not first.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not first.cancel()  # running: too late
        last = futures[-1]
        assert last.cancel() and last.cancelled() and last.done()
        with pytest.raises(cf.CancelledError):
            last.result()
        done, _ = cf.wait([last], timeout=5)  # waiters see it at once, not when its turn comes
        assert done == {last}
        assert [f.result(timeout=60) for f in futures[:-1]] == files[:-1]
    assert not Path(files[-1]).exists()  # a cancelled call never ran


def test_a_finished_call_is_not_held_by_a_slow_one_queued_with_it(make):
    # after many trivial calls, waiting calls travel several to a message: a call's result
    # must still come back as soon as it is done, not when a slow call after it ends
    with make(1) as ex:
        assert [f.result(timeout=60) for f in [ex.submit(square, i) for i in range(300)]][-1] == 299**2
        futures = [ex.submit(square, 3), ex.submit(nap, 6.0)] + [ex.submit(square, i) for i in range(30)]
        assert futures[0].result(timeout=4) == 9
        assert [f.result(timeout=60) for f in futures[2:]] == [i * i for i in range(30)]


def test_many_calls_stream_and_stay_in_step(make):
    # thousands of calls in flight at once: each future gets its own call's result
    with make(2) as ex:
        futures = [ex.submit(operator.add, i, 1) for i in range(3000)]
        assert [f.result(timeout=120) for f in futures] == list(range(1, 3001))
        assert list(ex.map(square, range(3000), timeout=120)) == [i * i for i in range(3000)]


def test_shutdown_cancel_futures_cancels_what_has_not_started(make):
    ex = make(1)
    futures = [ex.submit(nap, 0.2) for _ in range(10)]
    deadline = time.monotonic() + 60
    while not futures[0].running() and not futures[0].done() and time.monotonic() < deadline:
        time.sleep(0.01)
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    cancelled = [f for f in futures if f.cancelled()]
    assert cancelled and len(cancelled) < len(futures)
    assert all(f.result() == 0.2 for f in futures if not f.cancelled())
    if isinstance(ex, ezflow.Executor):
        # ProcessPoolExecutor (3.11) never tells as_completed about these: it times out
        assert len(list(cf.as_completed(futures, timeout=5))) == len(futures)


def test_submit_after_shutdown_is_refused(make):
    ex = make()
    ex.submit(square, 1).result(timeout=60)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(square, 2)
    ex.shutdown()  # twice is fine


def test_shutdown_without_wait_lets_running_calls_finish(make):
    ex = make()
    futures = [ex.submit(nap, 0.1) for _ in range(4)]
    ex.shutdown(wait=False)
    assert [f.result(timeout=60) for f in futures] == [0.1] * 4


def test_as_completed_and_wait(make):
    with make() as ex:
        futures = [ex.submit(fail_on_3, i) for i in range(6)]
        got = sorted((f.exception() is not None, f.result() if f.exception() is None else None)
                     for f in cf.as_completed(futures, timeout=60))
        assert got == [(False, 0), (False, 1), (False, 2), (False, 4), (False, 5), (True, None)]
        done, not_done = cf.wait(futures, timeout=60, return_when=cf.ALL_COMPLETED)
        assert len(done) == 6 and not not_done
        slow = ex.submit(nap, 3)  # outlives the failing call; the exit waits for it
        done, not_done = cf.wait([slow, ex.submit(fail_on_3, 3)], timeout=60, return_when=cf.FIRST_EXCEPTION)
        assert slow in not_done and len(done) == 1
        slow.cancel()


def test_run_in_executor(make):
    async def main(ex: cf.Executor) -> list[int]:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(ex, square, i) for i in range(5)))
        with pytest.raises(ValueError):
            await loop.run_in_executor(ex, fail_on_3, 3)
        return list(results)

    with make() as ex:
        assert asyncio.run(main(ex)) == [0, 1, 4, 9, 16]


# -- what ezflow's workers add ----------------------------------------------------------------


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_lambdas_and_closures_under_spawn(start_method):
    offset = 10
    with ezflow.Executor(2, start_method=start_method) as ex:
        assert ex.submit(lambda x: x + offset, 1).result(timeout=60) == 11
        assert list(ex.map(lambda a, b: a * b, [1, 2], [3, 4])) == [3, 8]


def test_the_errors_name_the_call_and_keep_both_types():
    with ezflow.Executor(2) as ex:
        err = ex.submit(fail_on_3, 3).exception(timeout=60)
    assert isinstance(err, ValueError) and isinstance(err, ezflow.TaskError)
    assert "fail_on_3(3)" in str(err) and "ValueError: bad 3" in str(err)
    assert "fail_on_3" in err.traceback  # the worker's traceback text
    assert "noqa" not in "".join(traceback.format_exception(err))


def test_a_sigkilled_worker_fails_only_its_own_future():
    with ezflow.Executor(2) as ex:
        before = [ex.submit(nap, 0.05) for _ in range(6)]
        killed = ex.submit(kill_self, 0)
        after = [ex.submit(square, i) for i in range(6)]
        with pytest.raises(ezflow.WorkerDied) as info:
            killed.result(timeout=60)
        assert isinstance(info.value, ezflow.TaskError) and "SIGKILL" in str(info.value)
        assert [f.result(timeout=60) for f in before] == [0.05] * 6
        assert [f.result(timeout=60) for f in after] == [x * x for x in range(6)]
        assert ex.submit(square, 9).result(timeout=60) == 81  # still usable


def test_shared_numpy_arrays_cross_without_copies():
    np = pytest.importorskip("numpy")
    shared = ezflow.share(np.zeros(1000))
    big = np.arange(2_000_000, dtype=np.float64)  # 16 MB: goes through shared memory as in ezflow.map
    with ezflow.Executor(2) as ex:
        ex.submit(np.copyto, shared, 7.0).result(timeout=60)  # writes into the parent's array
        assert shared[0] == 7.0 and shared[-1] == 7.0
        assert ex.submit(np.sum, big).result(timeout=60) == big.sum()
        assert ex.submit(operator.mul, big, 2).result(timeout=60)[-1] == 2 * big[-1]
    del shared


def test_threads_mode_runs_in_this_process():
    with ezflow.Executor(4, mode="thread") as ex:
        assert set(ex.map(pid, range(8))) == {os.getpid()}
        unpicklable = threading.Lock()
        assert ex.submit(lambda lock: lock.locked(), unpicklable).result(timeout=60) is False


def test_process_workers_are_warm_and_reused():
    with ezflow.Executor(2) as ex:
        pids = set(ex.map(pid, range(20)))
    assert len(pids) <= 2 and os.getpid() not in pids


def test_workers_are_recycled_after_max_tasks():
    with ezflow.Executor(1, max_tasks_per_worker=2) as ex:
        pids = [ex.submit(pid).result(timeout=60) for _ in range(6)]
    assert len(set(pids)) == 3, pids


def test_a_dropped_executor_ends_its_run():
    ex = ezflow.Executor(1)
    assert ex.submit(square, 3).result(timeout=60) == 9
    handle = ex._handle
    del ex
    gc.collect()
    handle.wait(timeout=60)  # the input was closed: the run ends, its workers are free
    assert handle.done()


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        ezflow.Executor(0)
    with pytest.raises(ValueError, match="mode must be 'process' or 'thread'"):
        ezflow.Executor(2, mode="async")
    with pytest.raises(ValueError, match="max_memory= is not supported on mode='thread'"):
        ezflow.Executor(2, mode="thread", max_memory="1GB")
    with ezflow.Executor(1, mode="thread") as ex, pytest.raises(ValueError, match="chunksize"):
        ex.map(square, [1], chunksize=0)


def test_it_is_a_concurrent_futures_executor():
    assert issubclass(ezflow.Executor, cf.Executor)
    with ezflow.Executor(1, mode="thread") as ex:
        assert isinstance(ex.submit(square, 2), cf.Future)
        assert "thread" in repr(ex)
