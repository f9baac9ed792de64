"""What is particular to the dask backend, on a real local dask cluster.

The map and Flow semantics themselves (order, errors, retries, class
stages, generators, stopping) are the behavioural suite's: every test that
takes the `mode` fixture runs on a dask stage too (tests/conftest.py), and
the option table's dask column is checked in tests/test_item_rules.py. Here:
how a backend is named (client, address, cluster, "dask"), dask stages
between local ones, that nothing is left on the scheduler, class stages on
the cluster's own workers, cluster workers that die, and shared arrays
crossing to a cluster.

One module-scoped `LocalCluster` (two worker processes) serves the ordinary
tests; it starts before the first test's leak check and stops after the
last, so the leak fixture sees its workers as already there. Tests that
kill workers get a cluster of their own, started and stopped inside the
test: the nanny restarts a killed worker as a new process, which the leak
check would otherwise count as left behind.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import warnings

import numpy as np
import pytest

import ezflow

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

pytestmark = [
    pytest.mark.timeout(60),
    # with no dashboard the scheduler still serves /health on :8787, or elsewhere if taken
    pytest.mark.filterwarnings("ignore:Port 8787 is already in use"),
]


def _cluster(**config: object) -> distributed.LocalCluster:
    with dask.config.set(config):  # read by the scheduler, which runs in this process
        return distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        )


@pytest.fixture(scope="module")
def cluster():
    c = _cluster()
    yield c
    c.close()


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as c:
        yield c


def ezflow_tasks(client: distributed.Client) -> list[str]:
    """Return the keys of ezflow's tasks the scheduler still knows."""
    keys = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])
    return [k for k in keys if k.startswith("ezflow-")]


def wait_for(predicate, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- functions the workers run (importable: the workers share our sys.path) --


def double(x):
    return x * 2


def fails_on_seven(x):
    if x == 7:
        raise ValueError(f"bad item {x}")
    return x


def slow(x):
    time.sleep(0.05)
    return x


def kill_on_13(x):
    if x == 13:
        os._exit(1)
    return x


# -- the same results ---------------------------------------------------------


def test_map_with_client(client):
    data = list(range(5000))
    assert ezflow.map(double, data, backend=client, progress=False) == [x * 2 for x in data]
    assert wait_for(lambda: not ezflow_tasks(client))  # no task or result kept on the cluster


def test_map_with_address_and_current_client(client, cluster):
    data = list(range(300))
    address = cluster.scheduler_address
    assert address.startswith("tcp://")
    assert ezflow.map(double, data, backend=address, progress=False) == [x * 2 for x in data]
    assert ezflow.map(double, data, backend="dask", progress=False) == [x * 2 for x in data]
    assert ezflow.map(double, data, backend=cluster, progress=False) == [x * 2 for x in data]
    # the stage's own client is closed, and never became the default
    assert distributed.default_client() is client


def test_flow_with_a_dask_stage_between_local_stages(client):
    flow = (
        ezflow.Flow(range(400))
        .map(double, mode="thread", workers=2)
        .map(lambda x: x + 1, backend=client, name="remote")
        .filter(lambda x: x % 3 != 0, mode="process", workers=2)
        .batch(16)
        .flat_map(lambda b: b[:2], backend=client)
    )
    want = [x * 2 + 1 for x in range(400)]
    want = [x for x in want if x % 3 != 0]
    want = [y for i in range(0, len(want), 16) for y in want[i : i + 16][:2]]
    assert flow.collect(progress=False) == want
    stats = flow.stats
    assert stats["remote"].mode == "dask"
    assert stats["remote"].items_out == 400


# -- errors -------------------------------------------------------------------
# (what a failure says, on every backend, is the behavioural suite's: tests/test_map.py,
# tests/test_flow.py; the option table, dask column included, is tests/test_item_rules.py's)


def test_a_failed_run_leaves_nothing_on_the_scheduler(client):
    with pytest.raises(ezflow.TaskError):
        ezflow.map(fails_on_seven, range(100), backend=client, progress=False)
    assert wait_for(lambda: not ezflow_tasks(client))

    class Broken:
        def __init__(self):
            raise RuntimeError("no model here")

        def __call__(self, x):
            return x

    with pytest.raises(ezflow.StageError, match="no model here"):
        ezflow.map(Broken, range(10), backend=client, progress=False)
    assert wait_for(lambda: not ezflow_tasks(client), 2.0)


def test_class_stage_built_once_per_cluster_worker_and_closed(client, tmp_path):
    log = str(tmp_path / "closed.txt")

    class Model:
        def __init__(self):
            self.pid = os.getpid()

        def __call__(self, x):
            return (self.pid, id(self), x * 2)

        def close(self):
            with open(log, "a") as f:
                f.write(f"{self.pid}\n")

    got = ezflow.map(Model, range(2000), backend=client, progress=False)
    assert [v for _, _, v in got] == [x * 2 for x in range(2000)]
    instances: dict[int, set[int]] = {}
    for pid, ident, _ in got:
        instances.setdefault(pid, set()).add(ident)
    assert all(len(ids) == 1 for ids in instances.values())  # one instance per worker
    workers = set(client.run(os.getpid).values())
    assert set(instances) <= workers
    with open(log) as f:
        closed = [int(line) for line in f]
    assert sorted(closed) == sorted(workers)  # built on every worker at start, closed once each


def test_a_bad_backend_says_what_it_takes():
    with pytest.raises(TypeError, match="backend must be"):
        ezflow.map(double, range(3), backend=42, progress=False)


def test_missing_dask_says_how_to_install(monkeypatch):
    from ezflow._executors.dask import DaskNotInstalled, import_distributed

    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` fail
    with pytest.raises(ImportError, match=r'pip install "ezflow\[dask\]"') as info:
        import_distributed()
    assert isinstance(info.value, DaskNotInstalled)


# -- cancelling ---------------------------------------------------------------


def test_stopping_early_cancels_outstanding_tasks(client):
    it = ezflow.imap(slow, range(10_000), backend=client, progress=False)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert wait_for(lambda: not ezflow_tasks(client), 5.0)  # about 30 ms on an idle machine
    assert wait_for(lambda: not any(client.processing().values()), 3.0)  # nothing left running


# -- workers dying ------------------------------------------------------------


def test_worker_killed_mid_run_results_stay_exact():
    with _cluster() as cluster, distributed.Client(cluster, set_as_default=False) as client:
        pids = list(client.run(os.getpid).values())
        got = []
        for i, v in enumerate(ezflow.imap(slow, range(120), backend=client, progress=False)):
            got.append(v)
            if i == 10:
                os.kill(pids[0], signal.SIGKILL)  # a worker process we started
        assert got == list(range(120))


def test_item_that_kills_every_worker_becomes_a_failure():
    # allowed-failures=1: dask gives up on a task after it killed two workers
    with _cluster(**{"distributed.scheduler.allowed-failures": 1}) as cluster, distributed.Client(
        cluster, set_as_default=False
    ) as client:
        got = ezflow.map(kill_on_13, range(40), backend=client, errors="return", progress=False)
        assert [v for i, v in enumerate(got) if i != 13] == [x for x in range(40) if x != 13]
        f = got[13]
        assert isinstance(f, ezflow.Failure)
        assert (f.index, f.item, f.stage) == (13, 13, "kill_on_13")
        assert isinstance(f.error, ezflow.WorkerDied)
        assert "kept dying" in str(f.error)


# -- shared memory: a Dask stage gets the data, never a reference -------------
# (ezflow's shared arrays are local to this machine; dask pickles them with their
# data. The autouse leak check fails a test that leaves an ezf_* segment behind.)

MIB = 1 << 20


def total(x):
    a = x["image"] if isinstance(x, dict) else x
    return float(a.sum())


def make_big(i):
    return np.full(MIB // 8 + 16, float(i))  # a bit over 1 MiB: shared automatically by a process stage


def make_4mib(i):
    return np.full(MIB // 2, float(i))


def ours() -> list[str]:
    """The shared-memory segments this process owns (named ezf_<owner pid>_...)."""
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"ezf_{os.getpid()}_"))


def none_left() -> bool:
    gc.collect()  # a finished run holds its items in a reference cycle until collected
    ezflow.shutdown()  # free segments are kept a while for the next run: let go of them now
    return wait_for(lambda: not ours())


@pytest.fixture
def caught():
    """Every warning raised while the test runs (none is expected)."""
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        yield found


def test_shared_arrays_reach_a_dask_stage_by_value(client, caught):
    a = ezflow.share(np.arange(float(MIB // 8 + 8)))  # 1 MiB, in shared memory
    assert ours()
    items = [a, a[::2], {"image": a, "label": "x"}]
    got = ezflow.map(total, items, backend=client, progress=False)
    assert got == [float(a.sum()), float(a[::2].sum()), float(a.sum())]
    assert [str(w.message) for w in caught] == []
    del a, items
    assert none_left()


def test_process_stage_shares_arrays_then_a_dask_stage_reads_them(client, caught):
    from ezflow._transport import segments

    shared = []

    def wrap(a):  # a thread stage, in this process: see what the process stage sent back
        shared.append(segments._root(a) is not None)
        return {"image": a, "i": int(a[0])}

    flow = (
        ezflow.Flow(range(12))
        .map(make_big, workers=2)  # results over 1 MiB: moved through shared memory
        .map(wrap, mode="thread")
        .map(total, backend=client)
    )
    assert flow.collect(progress=False) == [float(i) * (MIB // 8 + 16) for i in range(12)]
    assert shared == [True] * 12
    assert [str(w.message) for w in caught] == []
    del flow
    assert none_left()


def test_big_items_go_a_few_per_dask_task(client, caught):
    # 8 items of 4 MiB would make a 32 MiB task: dask warns about graphs over 10 MB
    flow = ezflow.Flow(range(16)).map(make_4mib, workers=2).map(total, backend=client, chunksize=8)
    assert flow.collect(progress=False) == [float(i) * (MIB // 2) for i in range(16)]
    assert [str(w.message) for w in caught] == []
    del flow
    assert none_left()


# -- the notebook -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_notebook_runs_top_to_bottom():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")
    nb = nbformat.read(os.path.join(here, "dask.ipynb"), as_version=4)
    # each cell gets 60 s; the test's own timeout guards the whole (no timing assertion: machines are noisy)
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": here}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
