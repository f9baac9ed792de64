"""Shared memory: real worker processes, real /dev/shm.

The autouse ``no_leaks`` fixture (conftest) fails any test that leaves an
``ezf_*`` segment or a child process behind, so every test here is also a
lifecycle test. The Ctrl-C and SIGKILL-of-everything cases run in a
subprocess script.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import ezflow
from ezflow._executors.wire import Task, encode
from ezflow._transport import registry as _registry
from ezflow._transport import segments as _segments
from ezflow._transport import shm as _shm

share = getattr(ezflow, "share", None) or _shm.share
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20


@pytest.fixture(autouse=True)
def collect_cycles():
    """A finished run sits in a reference cycle (Run <-> its stage drivers) that
    still holds its source items until the cycle collector runs; collect it
    before the leak check, as a long-lived program eventually would."""
    yield
    gc.collect()


def segments(owner: int | None = None) -> list[str]:
    names = [n for n in os.listdir(_shm.SHM_DIR) if n.startswith(_shm.PREFIX)]
    if owner is not None:
        names = [n for n in names if n.split("_")[1] == str(owner)]
    return sorted(names)


def is_shared(a) -> bool:
    return _segments._root(a) is not None


# -- work functions (importable: they run under spawn and forkserver too) -------


def echo(x):
    return x


def describe(x):
    """What the worker received: type, and for arrays whether they view shared memory."""
    return (type(x).__name__, is_shared(x) if isinstance(x, (np.ndarray, memoryview)) else None)


def write_first(x):
    a = x.arr if hasattr(x, "arr") else x
    a[0] = -1
    return True


def reach(x):
    """Dig the array out of any container and write to it."""
    while not isinstance(x, np.ndarray):
        if isinstance(x, (tuple, list)):
            x = x[-1]
        elif isinstance(x, dict):
            x = next(iter(x.values()))
        else:
            x = x.arr
    x[3] = 42.0
    return is_shared(x)


def fill_slot(args):
    out, i = args
    out[i] = i * 10
    return i


def scale(a):
    return a * 2 + 1


def total(a):
    return float(a.sum())


def make_big(i):
    return np.full(MIB // 8 + 16, float(i))  # a bit over 1 MiB: shared by default


def make_small(i):
    return np.full(16, float(i))


def scribble_then_fail(a):
    a[:] = 0  # writes to an automatically shared input stay in this worker
    raise ValueError("after scribbling")


def scribble_and_return(a):
    a += 1
    return a


@dataclasses.dataclass
class Holder:
    arr: np.ndarray
    label: str = "x"


class Plain:
    def __init__(self, arr):
        self.arr = arr


# -- share() itself ----------------------------------------------------------------


DTYPES = [
    np.float64, np.float32, np.float16, np.int8, np.uint64, np.bool_, np.complex128,
    "datetime64[ns]", "U5", "S3", np.dtype([("x", "<i4"), ("y", "<f8")]), ">i4",
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_share_keeps_values_dtype_shape(dtype):
    if np.dtype(dtype).kind not in "V":
        src = np.arange(24).reshape(2, 3, 4).astype(dtype)
    else:
        src = np.zeros((2, 3, 4), dtype)
    a = share(src)
    assert type(a) is np.ndarray and is_shared(a)
    assert a.dtype == src.dtype and a.shape == src.shape
    assert np.array_equal(a, src)
    assert a.flags.c_contiguous and a.flags.writeable


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        lambda: np.arange(40.0).reshape(5, 8)[::2, 1::3],  # not contiguous
        lambda: np.array(3.5),  # 0-d
        lambda: np.zeros((0, 4)),  # empty
    ],
    ids=["fortran", "strided", "0d", "empty"],
)
def test_share_layouts(make):
    src = make()
    a = share(src)
    assert is_shared(a) and np.array_equal(a, src) and a.shape == src.shape
    if src.flags.f_contiguous and not src.flags.c_contiguous:
        assert a.flags.f_contiguous  # layout kept
    if not (src.flags.c_contiguous or src.flags.f_contiguous):
        assert a.flags.c_contiguous  # copied once into a contiguous segment


def test_share_bytes_bytearray_and_readonly():
    b = share(b"hello shared world")
    assert isinstance(b, memoryview) and b.readonly and b == b"hello shared world"
    assert bytes(b[:5]) == b"hello" and is_shared(b)
    ba = share(bytearray(b"abc"))
    assert isinstance(ba, memoryview) and not ba.readonly
    ba[0] = ord("z")
    assert bytes(ba) == b"zbc"
    ro = np.arange(5.0)
    ro.flags.writeable = False
    r = share(ro)
    assert not r.flags.writeable and np.array_equal(r, ro)


def test_share_is_idempotent_and_rejects_what_it_cannot_share():
    a = share(np.arange(10))
    v = a[2:]
    assert share(a) is a and share(v) is v
    with pytest.raises(TypeError, match="Python objects"):
        share(np.array([object()]))
    with pytest.raises(TypeError, match="numpy array, bytes or bytearray"):
        share([1, 2, 3])
    with pytest.raises(TypeError, match="plain numpy.ndarray"):
        share(np.ma.masked_array([1, 2]))


def test_views_keep_the_segment_alive_and_copies_are_private():
    a = share(np.arange(1000.0))
    name = _segments._root(a).name
    view = a[10:20]
    private = np.array(a)
    copy = a.copy()
    assert not is_shared(private) and not is_shared(copy)
    del a
    gc.collect()
    assert name in segments()  # the view still uses it
    assert view.sum() == sum(range(10, 20))
    view[0] = -5
    assert private[10] == 10 and copy[10] == 10
    del view
    gc.collect()
    _wait_gone(name)


def _wait_gone(name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while name in segments() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert name not in segments()


def test_plain_pickle_carries_the_data():
    a = share(np.arange(100.0))
    data = pickle.dumps(a, protocol=5)
    assert len(data) > a.nbytes  # the data, not a reference
    b = pickle.loads(data)
    assert np.array_equal(a, b) and not is_shared(b)
    mv = share(b"xyz" * 100)
    back = pickle.loads(pickle.dumps(mv))
    assert bytes(back) == bytes(mv) and not is_shared(back)
    from ezflow._transport.serialize import dumps

    assert len(dumps(a)) > a.nbytes  # outside a process stage's transport (a Dask stage): the data
    link = _shm.StageLink(None)
    try:
        assert len(link.dumps_task(0, 1, lambda share: encode(Task(0, 1, [a], False, 0, share)))) < 1000  # a reference
        with _shm.by_value():
            assert len(link.dumps_task(1, 1, lambda share: encode(Task(1, 1, [a], False, 0, share)))) > a.nbytes
    finally:
        link.close()


# -- through worker processes ----------------------------------------------------


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_round_trip_every_kind(start_method):
    items = [
        share(np.arange(12.0).reshape(3, 4)),
        share(np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))),
        share(np.array([(1, 2.0)], dtype=[("x", "<i4"), ("y", "<f8")])),
        share(np.array(7)),
        share(b"bytes!"),
        share(bytearray(b"bytearray")),
    ]
    seen = ezflow.map(describe, items, workers=2, start_method=start_method, progress=False)
    assert seen == [("ndarray", True)] * 4 + [("memoryview", True)] * 2
    back = ezflow.map(echo, items, workers=2, start_method=start_method, progress=False)
    for got, want in zip(back, items):
        assert type(got) is type(want) and is_shared(got)
        if isinstance(want, np.ndarray):
            assert got.dtype == want.dtype and got.strides == want.strides and np.array_equal(got, want)
        else:
            assert bytes(got) == bytes(want) and got.readonly == want.readonly


@pytest.mark.parametrize(
    "wrap",
    [
        lambda a: (a,),
        lambda a: [0, [a]],
        lambda a: {"k": {"arr": a}},
        lambda a: Holder(a),
        lambda a: Plain(a),
    ],
    ids=["tuple", "list", "dict", "dataclass", "attribute"],
)
def test_nested_fields_reach_the_worker_as_the_same_memory(wrap):
    a = share(np.zeros(8))
    assert ezflow.map(reach, [wrap(a)], workers=1, progress=False) == [True]
    assert a[3] == 42.0  # share(): one memory in every process


def test_workers_fill_a_shared_output():
    out = share(np.zeros(20))
    ezflow.map(fill_slot, [(out, i) for i in range(20)], workers=2, progress=False)
    assert list(out) == [i * 10 for i in range(20)]


def test_two_stage_flow_shares_automatically():
    arrays = [np.random.default_rng(i).random(MIB // 8) for i in range(12)]  # 1 MiB each
    flow = ezflow.Flow(arrays).map(scale, workers=2).map(total, workers=2)
    got = flow.collect(progress=False)
    assert got == pytest.approx([float((a * 2 + 1).sum()) for a in arrays])
    # the decoded arrays reach the parent as views of shared memory
    outs = ezflow.Flow(range(6)).map(make_big, workers=2).collect(progress=False)
    assert all(is_shared(o) and o[0] == i for i, o in enumerate(outs))
    assert outs[2].mean() == 2.0 and (outs[3] + 1).sum() == 4.0 * outs[3].size
    assert not is_shared(outs[3] + 1)  # arithmetic gives ordinary private arrays
    # and go on to a next process stage without a copy
    assert ezflow.map(describe, outs[:2], workers=1, progress=False) == [("ndarray", True)] * 2


def test_threshold_and_switching_off():
    small = ezflow.map(make_small, range(4), workers=1, progress=False)
    assert not any(is_shared(s) for s in small)  # 128 bytes: below 1 MiB, pickled
    off = ezflow.map(make_big, range(2), workers=1, share_arrays=False, progress=False)
    assert not any(is_shared(o) for o in off)
    low = ezflow.map(make_small, range(2), workers=1, share_arrays=64, progress=False)
    assert all(is_shared(s) for s in low)
    with pytest.raises(ValueError, match="share_arrays"):  # when the stage is built
        ezflow.Flow(range(2)).map(make_small, share_arrays="yes")


def test_worker_writes_to_automatic_data_stay_private():
    a = np.arange(float(MIB // 8 + 8))
    # stage 1 returns a big array (shared automatically); stage 2 scribbles on it
    flow = ezflow.Flow([a]).map(scale, workers=1).map(scribble_then_fail, workers=1, errors="return")
    (failure,) = flow.collect(progress=False)
    assert isinstance(failure, ezflow.Failure)
    assert is_shared(failure.item) and np.array_equal(failure.item, a * 2 + 1)  # untouched
    back = ezflow.Flow([a]).map(scale, workers=1).map(scribble_and_return, workers=1).collect(progress=False)
    assert np.array_equal(back[0], a * 2 + 2)
    # an explicit share() is one memory: the same write is seen by the parent
    s = share(np.arange(4.0))
    ezflow.map(write_first, [s], workers=1, progress=False)
    assert s[0] == -1


def test_arrays_a_function_holds_are_shared_copy_on_write():
    big = np.arange(float(MIB // 8 + 8))  # a plain array over the threshold, in a closure

    def peek(i):  # (only names from installed modules: dill copies a local module's globals)
        seen = type(big.base.base).__name__ == "_Mapping"
        big[i] = -1.0  # the worker's own copy-on-write page: never seen elsewhere
        return seen, float(big[i]), float(big[i + 1])

    got = ezflow.map(peek, [0, 5], workers=1, progress=False)
    assert got == [(True, -1.0, 1.0), (True, -1.0, 6.0)]
    assert big[0] == 0.0 and not is_shared(big)


def test_dask_stage_gets_the_data():
    distributed = pytest.importorskip("distributed")
    a = share(np.arange(float(MIB // 8 + 8)))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        got = ezflow.map(total, [a, a[::2]], backend=client, progress=False)
    assert got == [float(a.sum()), float(a[::2].sum())]


# -- lifecycle: errors, cancel, killed workers ---------------------------------------


def fail_on_two(x):
    if x[0] == 2:
        raise RuntimeError("two")
    return x * 1.5


def share_then_die(i):
    keep = share(np.full(MIB, float(i)))  # made in the worker, never sent
    big = np.full(MIB, 1.0)
    if i == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return big + keep[0]


def hold_input_then_die(a):
    if a[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return float(a.sum())


def slow_big(i):
    time.sleep(0.05)
    return np.full(MIB // 4, float(i))


def test_free_segments_are_kept_a_while_for_the_next_run(monkeypatch):
    monkeypatch.setattr(_registry, "POOL_LINGER", 0.5)
    arrays = [np.full(MIB // 8, float(i)) for i in range(6)]
    flow = ezflow.Flow(arrays).map(scale, workers=2).map(total, workers=2)
    assert flow.collect(progress=False) == [float((a * 2 + 1).sum()) for a in arrays]
    gc.collect()
    kept = segments(os.getpid())
    assert kept, "the next run should find free segments to reuse"
    # a second run reuses them rather than making new ones
    flow.collect(progress=False)
    gc.collect()
    assert set(segments(os.getpid())) & set(kept)
    deadline = time.monotonic() + 5
    while segments(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert segments(os.getpid()) == []  # the reaper frees them once the linger is over


def test_shutdown_frees_the_kept_segments():
    ezflow.Flow([np.full(MIB // 8, 1.0)] * 4).map(scale, workers=2).collect(progress=False)
    gc.collect()
    ezflow.shutdown()
    assert segments(os.getpid()) == []


def test_error_frees_segments():
    arrays = [np.full(MIB // 8, float(i)) for i in range(6)]
    with pytest.raises(ezflow.TaskError):
        ezflow.Flow(arrays).map(fail_on_two, workers=2).map(total, workers=2).collect(progress=False)


def test_sigkilled_worker_frees_what_it_made_and_held():
    got = ezflow.map(share_then_die, range(4), workers=2, errors="return", progress=False)
    assert isinstance(got[1], ezflow.Failure) and isinstance(got[1].error, ezflow.WorkerDied)
    assert [g[0] for i, g in enumerate(got) if i != 1] == [1.0, 3.0, 4.0]
    del got
    inputs = [share(np.full(MIB // 8, float(i))) for i in range(6)]
    got = ezflow.map(hold_input_then_die, inputs, workers=2, errors="return", progress=False)
    assert isinstance(got[3], ezflow.Failure)


def test_cancel_frees_segments():
    handle = ezflow.Flow(range(200)).map(slow_big, workers=2).map(total, workers=2).start(progress=False)
    deadline = time.monotonic() + 60
    while handle.stats.stages[1].items_in < 2:  # arrays are on their way: segments in use
        assert time.monotonic() < deadline
        time.sleep(0.01)
    summary = handle.cancel()
    assert summary["unfinished"] > 0
    kept = handle.wait(10)  # the results that finished are kept (floats): no segment in them
    assert len(kept) == summary["kept"]


def test_early_stop_of_imap_frees_segments():
    it = ezflow.imap(make_big, range(1000), workers=2, progress=False)
    first = [next(it) for _ in range(3)]
    it.close()
    assert [f[0] for f in first] == [0.0, 1.0, 2.0]


def _script(code: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(kw.pop("env", {}))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


RUNNING_SCRIPT = """
import os, time, numpy as np, ezflow
from ezflow._transport import segments
from ezflow._transport import shm as _shm

def slow(a):
    time.sleep(0.2)
    return a * 2

if __name__ == "__main__":
    keep = _shm.share(np.ones(1 << 18))
    arrays = [np.full(1 << 18, float(i)) for i in range(400)]
    it = ezflow.Flow(arrays).map(slow, workers=2).map(slow, workers=2).iter(progress=False)
    next(it)
    try:  # the line is printed inside the try: a SIGINT that follows it at once is caught
        print("running", os.getpid(), flush=True)
        for _ in it:
            pass
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


def test_ctrl_c_leaves_nothing():
    proc = _script(RUNNING_SCRIPT)
    line = proc.stdout.readline()
    assert line.startswith("running"), line + proc.stderr.read()
    pid = int(line.split()[1])
    assert segments(pid)  # it really uses shared memory
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "interrupted" in out, out + err
    assert "leaked" not in err and "resource_tracker" not in err, err
    assert segments(pid) == []


def test_ctrl_c_inside_a_mappings_finalizer_still_stops_the_caller(monkeypatch):
    """A SIGINT that lands while a mapping's finalizer runs is not lost as an exception "ignored in" it."""
    import time
    import weakref

    from ezflow._transport import segments as seg

    def hit_by_ctrl_c(*args: object) -> None:
        raise KeyboardInterrupt  # where a real one lands when the signal arrives mid-finalizer

    monkeypatch.setattr(seg, "_unmap", hit_by_ctrl_c)

    class Mapping:
        pass

    view = Mapping()
    weakref.finalize(view, seg._unmapped, "ezf_x", 0, 0, -1, "own", os.getpid(), False, 0)
    with pytest.raises(KeyboardInterrupt):
        del view  # the finalizer runs here; Python would print and drop what it raises
        for _ in range(200):
            time.sleep(0.005)  # the Ctrl-C delivered again arrives at the next check


def test_killed_process_group_is_cleaned_at_next_start():
    proc = _script(RUNNING_SCRIPT, start_new_session=True)
    line = proc.stdout.readline()
    assert line.startswith("running"), line + proc.stderr.read()
    pid = int(line.split()[1])
    left = segments(pid)
    assert left
    os.killpg(proc.pid, signal.SIGKILL)  # everything: parent, workers, resource tracker
    proc.communicate(timeout=10)
    # Nobody was left to clean up: the next ezflow process to start does it. That is
    # usually the one started below, but another ezflow process sharing the machine
    # may start first and sweep them (the same rule at work), so no test here that
    # the segments are still there.
    code = "import ezflow; print(ezflow.map(abs, [-1], workers=1, progress=False))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.strip() == "[1]", done.stderr
    assert segments(pid) == []


def test_stale_segment_of_a_dead_owner_is_swept():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    name = f"{_shm.PREFIX}{dead.pid}_{dead.pid}_0"
    fd = os.open(os.path.join(_shm.SHM_DIR, name), os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    swept = _shm.sweep_stale()
    # another ezflow process starting on this machine may have swept it first
    assert name in swept or not os.path.exists(os.path.join(_shm.SHM_DIR, name))
    assert name not in segments()


FALLBACK_SCRIPT = """
import warnings, numpy as np, ezflow
from ezflow._transport import segments
from ezflow._transport import shm as _shm

def big(i):
    return np.full(1 << 20, float(i))

if __name__ == "__main__":
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        out = ezflow.Flow(range(6)).map(big, workers=2).map(lambda a: a + 1, workers=2).collect(progress=False)
        a = _shm.share(np.zeros(1 << 21))
    print("ok", all(o[0] == i + 1 for i, o in enumerate(out)), type(a).__name__, segments._root(a) is None)
    print("warnings", len([w for w in caught if issubclass(w.category, _shm.SharedMemoryWarning)]))
    print("message", [str(w.message) for w in caught][:1])
"""


def test_too_small_dev_shm_falls_back_with_one_warning():
    proc = _script(FALLBACK_SCRIPT, env={"EZFLOW_SHM_SIZE": "1M"})
    out, err = proc.communicate(timeout=60)
    assert "ok True ndarray True" in out, out + err
    assert "warnings 1" in out, out + err
    assert "--shm-size" in out
    assert "Traceback" not in err and "leaked" not in err, err


def test_missing_dev_shm_falls_back(monkeypatch):
    def no_shm(*args, **kw):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(_segments._posixshmem, "shm_open", no_shm)
    monkeypatch.setattr(_segments.S, "disabled", None)
    monkeypatch.setattr(_segments.S, "warned", False)
    with pytest.warns(_shm.SharedMemoryWarning, match="shared memory cannot be used"):
        a = share(np.arange(10))
    assert not is_shared(a) and list(a) == list(range(10))
    assert bytes(share(b"ab")) == b"ab"
