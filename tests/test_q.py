"""The ezq-compatible layer: Q, Msg, run, run_thread, with real processes.

The README examples of ezq run here per start method and per worker kind;
then one test per ezq defect (each would fail or hang on ezq), then the
queue semantics (sorted, items, Msg passthrough).
"""

from __future__ import annotations

import functools
import gc
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import ezflow
from ezflow._core.errors import RemoteError, RemoteTraceback, WorkerDied
from ezflow._ezq.q import END_MSG, Msg, Q, Worker, run, run_thread

pytestmark = pytest.mark.timeout(60)

START_METHODS = ["fork", "spawn", "forkserver"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(
    params=[pytest.param(m, id=f"process-{m}") for m in START_METHODS] + [pytest.param(None, id="thread")]
)
def start(request: pytest.FixtureRequest) -> Callable[..., Worker]:
    """Return `run` bound to one start method, or `run_thread`."""
    if request.param is None:
        return run_thread
    return functools.partial(run, start_method=request.param)


# (conftest's autouse no_leaks fixture fails a test that leaves a worker process running)


# -- ezq's README examples ---------------------------------------------------------


def sum_worker(q: Q, out: Q) -> None:
    """Add up all the messages."""
    total = 0
    for msg in q:
        total += msg.data
    out.put(total)


def test_readme_sum_messages(start: Callable[..., Worker]) -> None:
    q, out = Q(), Q()
    workers = [start(sum_worker, q, out) for _ in range(ezflow.NUM_CPUS)]
    for i in range(1000):
        q.put(i)
    q.stop(workers)
    assert sum(msg.data for msg in out.items()) == sum(range(1000))
    assert not any(w.is_alive() for w in workers)


def test_readme_sum_messages_with_thread_queues() -> None:
    q, out = Q("thread"), Q("thread")
    workers = [run_thread(sum_worker, q, out) for _ in range(ezflow.NUM_THREADS)]
    for i in range(1000):
        q.put(i)
    q.stop(workers)
    assert sum(msg.data for msg in out.items()) == sum(range(1000))


def printer(out: Q, lines: Q) -> None:
    """Print results in increasing order (onto `lines`: a forkserver child's
    stdout is the server's, which pytest cannot capture)."""
    for msg in out.sorted():
        lines.put(str(msg.data))


def collatz(q: Q, out: Q) -> None:
    """Read numbers and compute values."""
    for msg in q:
        num = float(msg.data)
        if msg.kind == "EVEN":
            out.put((num, num / 2), order=msg.order)
        elif msg.kind == "ODD":
            out.put((num, 3 * num + 1), order=msg.order)


@pytest.mark.parametrize("method", START_METHODS)
def test_readme_read_and_write_queues(method: str) -> None:
    q, out, lines = Q("thread"), Q(), Q()
    readers = [run_thread(collatz, q, out) for _ in range(ezflow.NUM_THREADS)]
    writer = run(printer, out, lines, start_method=method)
    for num in range(40):
        kind = "EVEN" if num % 2 == 0 else "ODD"
        q.put(num, kind=kind, order=num)
    q.stop(readers)
    out.stop(writer)
    want = [str((float(n), n / 2 if n % 2 == 0 else 3.0 * n + 1)) for n in range(40)]
    assert [m.data for m in lines.items()] == want


# -- defect 1: functions and queues travel under every start method ----------------


@pytest.mark.parametrize("method", START_METHODS)
def test_lambda_and_closure_workers(method: str) -> None:
    factor = 3  # read by the closure below, in the child

    def scale(q: Q, out: Q) -> None:
        for msg in q:
            out.put(msg.data * factor, order=msg.order)

    q, out = Q(), Q()
    workers = [
        run(lambda q, out: [out.put(m.data * 2, order=m.order) for m in q], q, out, start_method=method),
        run(scale, q, out, start_method=method),
    ]
    for i in range(50):
        q.put(i, order=i)
    q.stop(workers)
    got = [(m.order, m.data) for m in out.items(sort=True)]
    assert [o for o, _ in got] == list(range(50))
    assert all(d in (2 * o, 3 * o) for o, d in got)


MAIN_SCRIPT = """
import sys
from dataclasses import dataclass
from ezflow._ezq.q import Q, run

SCALE = 3  # a global of __main__: only dill(recurse=True) carries it

class Stop(Exception):
    pass

@dataclass
class Point:
    x: int

def worker(q, out):
    for msg in q:
        if msg.kind == "stop":
            raise Stop("asked to")
        out.put(Point(msg.data * SCALE))

q, out = Q(), Q()
workers = [run(worker, q, out, start_method=sys.argv[1]) for _ in range(2)]
for i in range(10):
    q.put(i)
q.put(None, kind="stop")
try:
    q.stop(workers)
except Stop:  # the owner's own class comes back, not a look-alike
    print("caught Stop")
print(sorted(m.data.x for m in out.items() if type(m.data) is Point))
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_main_module_function_like_a_notebook(method: str) -> None:
    # `python -c`: __main__ has no file a spawned child could import, as in Jupyter
    res = subprocess.run(
        [sys.executable, "-c", MAIN_SCRIPT, method],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["caught Stop", str([3 * i for i in range(10)])]


def test_q_pickles_as_itself_in_its_owner() -> None:
    q = Q()
    assert pickle.loads(pickle.dumps(q)) is q


def test_thread_q_refuses_to_pickle_and_says_what_to_use() -> None:
    with pytest.raises(TypeError, match=r"Q\(\) \(kind 'process'\)"):
        pickle.dumps(Q("thread"))


def test_thread_q_fails_visibly_in_a_forked_worker() -> None:
    q = Q("thread")
    w = run(sum_worker, q, Q(), start_method="fork")
    w.join()
    assert isinstance(w.exception, RuntimeError)
    assert "only inside the process that created it" in str(w.exception)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_thread_q_is_refused_at_start_under_spawn(method: str) -> None:
    with pytest.raises(TypeError, match=r"cannot send the arguments of sum_worker.*Q\('thread'\)"):
        run(sum_worker, Q("thread"), Q(), start_method=method)


def echo(q: Q, out: Q) -> None:
    for msg in q:
        out.put(msg)


def reply_on(q: Q) -> None:
    for msg in q:
        msg.data.put(f"reply to {msg.kind}")


def test_q_travels_inside_a_message(start: Callable[..., Worker]) -> None:
    q, answers = Q(), Q()
    w = start(reply_on, q)
    q.put(answers, kind="hello")
    assert answers.get(timeout=10).data == "reply to hello"
    q.stop(w)


# -- defect 2: a worker's exception surfaces -----------------------------------


def picky(q: Q, out: Q) -> None:
    for msg in q:
        if msg.kind == "boom":
            raise ValueError(f"boom at {msg.order}")
        out.put(msg.data)


def test_worker_exception_surfaces_from_stop(start: Callable[..., Worker]) -> None:
    q, out = Q(), Q()
    workers = [start(picky, q, out) for _ in range(2)]
    for i in range(20):
        q.put(i)
    q.put(None, kind="boom", order=99)
    for i in range(20, 40):
        q.put(i)
    with pytest.raises(ValueError, match="boom at 99") as info:
        q.stop(workers)
    # raised only once every worker was joined; nothing the workers put is lost
    assert not any(w.is_alive() for w in workers)
    assert sorted(m.data for m in out.items()) == list(range(40))
    failed = [w for w in workers if w.exception is not None]
    assert len(failed) == 1 and failed[0].exitcode == 1
    if failed[0].kind == "process":
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert "in picky" in cause.tb and "ValueError: boom at 99" in cause.tb


def raise_key_error() -> None:
    raise KeyError("missing")


def test_join_makes_the_exception_available(start: Callable[..., Worker]) -> None:
    w = start(raise_key_error)
    w.join()
    assert not w.is_alive()
    assert isinstance(w.exception, KeyError) and w.exception.args == ("missing",)
    assert w.exitcode == 1


def test_successful_worker_reports_no_exception(start: Callable[..., Worker]) -> None:
    q = Q()
    w = start(sum_worker, q, Q())
    assert "sum_worker" in w.name and (w.pid is None) == (w.kind == "thread")
    q.stop(w)
    assert w.exception is None and w.exitcode == 0 and not w.is_alive()


def test_join_timeout_and_terminate() -> None:
    q = Q()
    w = run(sum_worker, q, Q())
    w.join(timeout=0.05)
    assert w.is_alive() and w.exitcode is None and w.exception is None
    w.terminate()
    w.join()
    assert w.exitcode == -signal.SIGTERM and isinstance(w.exception, WorkerDied)
    t = run_thread(sum_worker, q, Q())
    with pytest.raises(TypeError, match="end its queue instead"):
        t.terminate()
    q.stop(t)


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("cannot travel")
        self.gen = (i for i in range(3))  # neither pickle nor dill takes a generator


def raise_unpicklable() -> None:
    raise Unpicklable()


@pytest.mark.parametrize("method", START_METHODS)
def test_unpicklable_exception_still_surfaces(method: str) -> None:
    w = run(raise_unpicklable, start_method=method)
    with pytest.raises(RemoteError, match="Unpicklable: cannot travel"):
        Q().stop(w)


def kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("method", START_METHODS)
def test_killed_worker_surfaces_as_worker_died(method: str) -> None:
    w = run(kill_myself, start_method=method)
    with pytest.raises(WorkerDied, match="SIGKILL"):
        Q().stop(w)
    assert w.exitcode == -signal.SIGKILL


# -- defect 3: no join-before-drain hang ----------------------------------------


def flood(q: Q, out: Q) -> None:
    for _ in q:
        pass
    out.put(b"x" * 10_000_000)
    for i in range(2000):
        out.put(i)


def test_big_unread_output_does_not_hang_stop(start: Callable[..., Worker]) -> None:
    q, out = Q(), Q()
    workers = [start(flood, q, out) for _ in range(2)]
    t0 = time.monotonic()
    q.stop(workers)  # nobody reads `out` yet: ezq (multiprocessing) hangs here
    assert time.monotonic() - t0 < 30
    data = [m.data for m in out.items()]
    assert sorted(len(d) for d in data if isinstance(d, bytes)) == [10_000_000, 10_000_000]
    assert sorted(d for d in data if isinstance(d, int)) == sorted(list(range(2000)) * 2)


def double(q: Q, out: Q) -> None:
    for msg in q:
        out.put(msg.data * 2, order=msg.order)


def test_many_items_like_ezq_map(start: Callable[..., Worker]) -> None:
    q, out = Q(), Q()
    workers = [start(double, q, out) for _ in range(ezflow.NUM_CPUS)]
    for i in range(3000):
        q.put(i, order=i)
    q.stop(workers)
    assert [m.data for m in out.items(sort=True)] == [2 * i for i in range(3000)]


def test_large_messages_both_ways(start: Callable[..., Worker]) -> None:
    q, out = Q(), Q()
    workers = [start(double, q, out) for _ in range(2)]
    for i in range(40):
        q.put(bytes([i]) * 300_000, order=i)
    q.stop(workers)
    got = list(out.items(sort=True))
    assert [m.order for m in got] == list(range(40))
    assert all(m.data == bytes([m.order]) * 600_000 for m in got)


# -- defect 4: no leaks -------------------------------------------------------------


KILL_SCRIPT = """
import sys, time
from ezflow._ezq.q import Q, run

def wait_forever(q):
    for msg in q:
        pass

def busy(q):
    while True:
        pass

if __name__ == "__main__":
    q = Q()
    ws = [run(fn, q, start_method=sys.argv[1]) for fn in (wait_forever, busy)]
    q.put(1)
    print(" ".join(str(w.pid) for w in ws), flush=True)
    time.sleep(60)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("method", START_METHODS)
def test_workers_exit_when_the_parent_is_sigkilled(method: str, tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    parent = subprocess.Popen(
        [sys.executable, str(script), method], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 3
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if not _gone(p)]
    for p in left:  # do not leave them behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their SIGKILLed parent"


def _shm_maps(pid: int | str = "self") -> set[str]:
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1] for line in f if "/dev/shm/" in line}


def report_shm_maps(out: Q) -> None:
    out.put(sorted(_shm_maps()))


@pytest.mark.parametrize("method", START_METHODS)
def test_no_dev_shm_entries(method: str) -> None:
    before_maps = _shm_maps()
    q, out = Q(), Q()
    workers = [run(sum_worker, q, out, start_method=method) for _ in range(2)]
    reporter = run(report_shm_maps, out, start_method=method)
    reporter.join()
    for i in range(100):
        q.put(i)
    q.stop(workers)
    child_maps = set(out.get(timeout=10).data)
    # ezq's queues map semaphores from /dev/shm, in parent and child alike
    assert child_maps <= before_maps and _shm_maps() <= before_maps


# -- errors that say the rule ---------------------------------------------------


def test_bad_kind_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="'process' or 'thread', got 'proc'"):
        Q("proc")  # type: ignore[arg-type]


def test_bad_start_method_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="start_method must be None or one of .*'spawn'.*got 'threads'"):
        run(sum_worker, Q(), Q(), start_method="threads")


def test_negative_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout must be >= 0"):
        Q().get(timeout=-1)


# -- queue semantics --------------------------------------------------------------


def _orders(q: Q, orders: list[int]) -> Q:
    for o in orders:
        q.put(f"m{o}", order=o)
    return q.end()


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_sorted_yields_by_order(kind: str) -> None:
    assert [m.order for m in _orders(Q(kind), [3, 1, 0, 2]).sorted()] == [0, 1, 2, 3]  # type: ignore[arg-type]


def test_sorted_holds_messages_after_a_gap_until_the_end() -> None:
    assert [m.order for m in _orders(Q(), [4, 0, 1, 3]).sorted()] == [0, 1, 3, 4]


def test_sorted_start() -> None:
    assert [m.order for m in _orders(Q(), [6, 5, 7]).sorted(start=5)] == [5, 6, 7]


def test_sorted_keeps_a_duplicate_from_blocking_the_rest() -> None:
    q = Q()
    q.put("a", order=0).put("dup", order=0).put("b", order=1)
    it = q.sorted()
    # 0 and 1 come out before the end marker arrives: the duplicate waits, not them
    assert [next(it).data, next(it).data] == ["a", "b"]
    q.end()
    assert [m.data for m in it] == ["dup"]


def test_sorted_streams_before_the_end() -> None:
    q = Q()
    q.put("second", order=1).put("first", order=0)
    it = q.sorted()
    assert next(it).data == "first" and next(it).data == "second"


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_items_ends_the_queue_and_reads_it(kind: str) -> None:
    q = Q(kind)  # type: ignore[arg-type]
    q.put(1).put(2)
    assert [m.data for m in q.items()] == [1, 2]
    q.put(3)
    assert [m.data for m in q.items()] == [3]
    with pytest.raises(queue.Empty):
        q.get(block=False)


def test_items_cache_returns_the_same_messages_again() -> None:
    q = Q()
    q.put("b", order=1).put("a", order=0)
    first = [m.data for m in q.items(cache=True, sort=True)]
    q.put("later")  # not seen: the cache was built when the queue ended
    assert first == ["a", "b"]
    assert [m.data for m in q.items(cache=True)] == first
    assert [m.data for m in q.items(cache=True, sort=False)] == first


def test_items_sort() -> None:
    q = Q()
    q.put("c", order=2).put("a", order=0).put("b", order=1)
    assert [m.data for m in q.items(sort=True)] == ["a", "b", "c"]


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_put_passes_a_msg_through_and_chains(kind: str) -> None:
    q = Q(kind)  # type: ignore[arg-type]
    msg = Msg({"k": 1}, kind="job", order=7)
    assert q.put(msg) is q
    assert q.get(timeout=1) == msg
    assert q.put("x", kind="k", order=3).get(timeout=1) == Msg("x", "k", 3)


def test_msg_passes_through_a_process_worker(start: Callable[..., Worker]) -> None:
    q, out = Q(), Q()
    w = start(echo, q, out)
    q.put(Msg([1, 2], kind="pair", order=5))
    q.stop(w)
    assert list(out.items()) == [Msg([1, 2], kind="pair", order=5)]


def test_end_marker_is_any_end_kind_message() -> None:
    q = Q()
    q.put(1).put(Msg(kind="END")).put(2)
    assert [m.data for m in q] == [1]
    assert q.get(timeout=1).data == 2
    assert END_MSG == Msg(kind="END")


def timed_gets(q: Q, out: Q) -> None:
    try:
        q.get(block=False)
    except queue.Empty:
        out.put("empty now")
    try:
        q.get(timeout=0.2)
    except queue.Empty:
        out.put("empty after 0.2 s")
    out.put(q.get(timeout=20).data)


def test_get_with_timeout_in_a_worker(start: Callable[..., Worker]) -> None:
    q, out = Q(), Q()
    w = start(timed_gets, q, out)
    assert out.get(timeout=10).data == "empty now"
    assert out.get(timeout=10).data == "empty after 0.2 s"
    q.put("late")
    assert out.get(timeout=10).data == "late"
    q.stop(w)


def test_threads_inside_a_process_worker_share_its_queues(start: Callable[..., Worker]) -> None:
    q, out = Q(), Q()
    w = start(fan_out, q, out)
    for i in range(100):
        q.put(i)
    q.stop(w)
    assert sorted(m.data for m in out.items()) == [2 * i for i in range(100)]


def fan_out(q: Q, out: Q) -> None:
    # a process worker may run thread workers, on its own thread Q
    work = Q("thread")
    inner = [run_thread(double, work, out) for _ in range(4)]
    for msg in q:
        work.put(msg)
    work.stop(inner)


def test_run_inside_a_worker_process_is_refused() -> None:
    out = Q()
    w = run(try_nested_run, out, start_method="fork")
    Q().stop(w)
    assert "use run_thread() there" in out.get(timeout=5).data


def try_nested_run(out: Q) -> None:
    try:
        run(sum_worker, Q(), Q())
    except RuntimeError as exc:
        out.put(str(exc))


def test_threads_see_the_same_objects_in_a_thread_q() -> None:
    q = Q("thread")
    lock = threading.Lock()  # cannot be pickled: a thread Q does not pickle
    q.put(lock)
    assert q.get().data is lock


def test_a_queue_freed_while_the_registry_is_locked_does_not_deadlock():
    # The garbage collector may free a Q (and run its finalizer) inside Q() while
    # that holds the registry lock: the release must not wait for the lock (it hung).
    from ezflow._ezq import state

    q = Q()
    qid = q._qid
    done = threading.Event()
    with state.R.lock:
        t = threading.Thread(target=lambda: (state._release(qid, os.getpid()), done.set()))
        t.start()
        t.join(5)
        del q
        gc.collect()  # its own finalizer runs here, on this thread, under the lock
    assert done.is_set()
    Q()  # the next registry user settles what was released meanwhile
    assert qid not in state.R.states


# -- the queue methods ezq's Q delegated to multiprocessing.Queue ---------------------------


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_the_queue_methods_work_in_the_owner(kind: str) -> None:
    q = Q(kind)
    assert q.qsize() == 0 and q.empty() and not q.full()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    assert q.put_nowait(1) is q
    q.put(2)
    assert q.qsize() == 2 and not q.empty()
    assert q.get_nowait().data == 1
    assert q.qsize() == 1
    q.close()
    q.join_thread()
    q.cancel_join_thread()
    with pytest.raises(ValueError, match="closed"):
        q.put(3)
    assert q.get_nowait().data == 2  # reading a closed queue still works, as with multiprocessing


def sizes_in_a_worker(q: Q, out: Q) -> None:
    out.put((q.qsize(), q.empty(), q.full()))
    first = q.get_nowait()
    out.put_nowait((first.data, q.qsize()))
    try:
        Q.get_nowait(q)
        Q.get_nowait(q)
    except queue.Empty:
        out.put("empty")
    out.close()
    out.join_thread()


def test_the_queue_methods_work_in_a_worker(start: Callable[..., Worker]) -> None:
    q, out = Q(), Q()
    q.put("a")
    q.put("b")
    w = start(sizes_in_a_worker, q, out)
    assert out.get(timeout=20).data == (2, False, False)
    assert out.get(timeout=20).data == ("a", 1)
    assert out.get(timeout=20).data == "empty"
    w.join(20)
    assert w.exception is None
    assert out.qsize() == 0 and q.empty()


def test_a_thread_q_has_task_done_and_join_like_queue_queue() -> None:
    q, out = Q("thread"), Q("thread")

    def worker(q: Q, out: Q) -> None:
        for msg in q:
            out.put(msg.data * 2)
            q.task_done()
        q.task_done()  # the end marker, as queue.Queue counts every put

    w = run_thread(worker, q, out)
    for i in range(5):
        q.put(i)
    q.end()
    q.join()  # returns once all six are marked done
    assert sorted(m.data for m in out.items()) == [0, 2, 4, 6, 8]
    w.join(20)
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    with pytest.raises(TypeError, match="Q\\('thread'\\)"):
        Q().task_done()
