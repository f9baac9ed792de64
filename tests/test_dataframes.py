"""DataFrames and Arrow: `ezflow.apply`, and pickle-5 buffers through real shared memory.

Every test runs real worker processes on real /dev/shm segments; the
autouse ``no_leaks`` fixture (conftest) fails any test that leaves a
segment or a process behind. "No copy" is proven from /proc/<pid>/maps:
the buffer a process reads lies inside a mapping of the segment the
sender wrote, named for its owner and creator.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ezflow

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20


@pytest.fixture(autouse=True)
def collect_cycles():
    """A finished run's reference cycles hold its items until collected (see test_shm.py)."""
    yield
    gc.collect()


def frame(n: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(27)
    return pd.DataFrame(
        {
            "a": np.arange(n),
            "f": rng.random(n),
            "s": pd.array([f"w{i % 97}" for i in range(n)], dtype="str"),
            "k": rng.integers(0, 23, n),
        }
    )


# -- work functions (importable: they run under spawn and forkserver too) -------


def row_fn(r):
    return r["a"] * 2 + len(r["s"]) + r["f"]


def row_to_series(r):
    return pd.Series({"x": r["a"] + 1, "y": r["s"] + "!"})


def chunk_fn(d):
    return d["a"] * d["f"] + d["s"].str.len()


def group_sum(d):
    return d["f"].sum()


def group_head(d):
    return d.head(2)


def group_double(d):
    return d[["f"]] * 2


def fails_on_big(d):
    if d["a"].max() >= 3000:
        raise ValueError("big")
    return d["a"] * 1.0


def mapped_segments(pid: int | str = "self") -> list[tuple[int, int, str]]:
    """(start, end, segment name) of every ezflow segment mapped in a process."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/dev/shm/ezf_"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi, parts[5][len("/dev/shm/") :]))
    return out


def where(addresses: list[int]) -> list[str | None]:
    """The segment each address lies in, in this process (None: private memory, a copy)."""
    maps = mapped_segments()
    return [next((name for lo, hi, name in maps if lo <= a < hi), None) for a in addresses]


def table_buffers(t) -> list[int]:
    """Addresses of the big buffers of a Table, a ChunkedArray or an Array."""
    arrays = t.columns if hasattr(t, "columns") and not isinstance(t, pd.DataFrame) else [t]
    out = []
    for col in arrays:
        for chunk in getattr(col, "chunks", [col]):
            out += [b.address for b in chunk.buffers() if b is not None and b.size >= MIB]
    return out


def where_table(t):
    """In the worker: (pid, segment of each big buffer of the Table it was given)."""
    return os.getpid(), where(table_buffers(t))


def where_string_column(s):
    """In the worker: the segment of each big buffer of an Arrow-backed string Series."""
    assert isinstance(s.array, pd.arrays.ArrowStringArray)
    chunked = pa.array(s.array)  # the same buffers (__arrow_array__: no copy)
    return os.getpid(), where(table_buffers(chunked))


def make_table(n):
    return pa.table({"x": np.arange(n, dtype=np.int64), "s": pa.array(np.arange(n).astype(str))})


# -- ezflow.apply equals what pandas returns -------------------------------------


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_apply_equals_pandas(mode):
    df = frame()
    kw = {"mode": mode, "workers": 2, "progress": False}
    pd.testing.assert_series_equal(ezflow.apply(df, row_fn, axis=1, **kw), df.apply(row_fn, axis=1))
    pd.testing.assert_frame_equal(ezflow.apply(df, row_to_series, axis="columns", **kw), df.apply(row_to_series, axis=1))
    pd.testing.assert_series_equal(ezflow.apply(df, chunk_fn, **kw), chunk_fn(df))
    pd.testing.assert_series_equal(ezflow.apply(df.groupby("k"), group_sum, **kw), df.groupby("k").apply(group_sum))
    pd.testing.assert_frame_equal(ezflow.apply(df.groupby("k"), group_head, **kw), df.groupby("k").apply(group_head))
    gk = df.groupby("k", group_keys=False)
    pd.testing.assert_frame_equal(ezflow.apply(gk, group_double, **kw), gk.apply(group_double))
    gs = df.groupby("k")["f"]
    pd.testing.assert_series_equal(ezflow.apply(gs, np.mean, **kw), gs.apply(np.mean))
    by = df.groupby(df["a"] % 7, sort=False)
    pd.testing.assert_series_equal(ezflow.apply(by, group_sum, **kw), by.apply(group_sum))
    # Series: chunks, and one value at a time
    pd.testing.assert_series_equal(ezflow.apply(df["f"], np.sqrt, **kw), np.sqrt(df["f"]))
    pd.testing.assert_series_equal(ezflow.apply(df["s"], len, axis=0, **kw), df["s"].apply(len))
    # columns (axis=0), and chunks with a chunksize given
    num = df[["a", "f", "k"]]
    pd.testing.assert_series_equal(ezflow.apply(num, np.sum, axis=0, **kw), num.apply(np.sum, axis=0))
    pd.testing.assert_series_equal(ezflow.apply(df, chunk_fn, chunksize=333, **kw), chunk_fn(df))


def test_apply_small_and_empty_frames():
    df = frame(5)
    pd.testing.assert_series_equal(ezflow.apply(df, row_fn, axis=1, progress=False), df.apply(row_fn, axis=1))
    empty = frame(0)
    pd.testing.assert_series_equal(ezflow.apply(empty, chunk_fn, progress=False), chunk_fn(empty))


def test_apply_errors_option():
    df = frame()
    kw = {"workers": 2, "progress": False, "chunksize": 500}
    with pytest.raises(ezflow.TaskError, match="big") as info:
        ezflow.apply(df, fails_on_big, **kw)
    assert isinstance(info.value.__cause__, ValueError)
    kept = ezflow.apply(df, fails_on_big, errors="skip", **kw)
    assert list(kept.index) == list(range(3000))
    got = ezflow.apply(df, fails_on_big, errors="return", **kw)
    assert len(got) == len(df) and all(isinstance(v, ezflow.Failure) for v in got.iloc[3000:])


def test_apply_bad_input_says_what_to_do():
    with pytest.raises(TypeError, match="DataFrame, Series, or a groupby.*ezflow.map"):
        ezflow.apply([1, 2, 3], len)
    with pytest.raises(ValueError, match="axis"):
        ezflow.apply(frame(10), len, axis=2)
    with pytest.raises(ValueError, match="chunksize"):
        ezflow.apply(frame(10), len, chunksize=0)


def test_apply_without_pandas_names_the_extra():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pandas"] = None  # as if it were not installed
        import ezflow
        try:
            ezflow.apply(object(), len)
        except ImportError as e:
            print(e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert 'pip install "ezflow[pandas]"' in out.stdout, out.stderr


class Seen:
    """An observer that keeps the last figures it was shown."""

    def open(self, stats):
        self.last = stats

    def update(self, stats):
        self.last = stats

    def close(self, stats):
        self.last = stats


def test_progress_counts_rows_not_chunks():
    df = frame(5000)
    seen = Seen()
    ezflow.apply(df, chunk_fn, workers=2, progress=seen, chunksize=1000)
    stage = seen.last.stages[0]
    assert seen.last.total == 5000 and stage.total == 5000
    assert stage.items_in == stage.items_out == 5000


# -- a big frame under fork: workers forked for the call inherit it ----------------------


@pytest.fixture
def inherit_any_size(monkeypatch):
    """Take the inheriting path for any frame (it starts at INHERIT_BYTES; these frames are small)."""
    import ezflow._apply

    monkeypatch.setattr(ezflow._apply, "INHERIT_BYTES", 0)


def float_address(d):
    """In the worker: (pid, address of its chunk's float column, whether that lies in a segment)."""
    addr = d["f"].to_numpy().__array_interface__["data"][0]
    return pd.Series([(os.getpid(), addr, where([addr])[0] is not None)] * len(d), index=d.index)


def test_under_fork_a_big_frame_reaches_workers_forked_for_the_call(inherit_any_size):
    df = frame()
    kw = {"workers": 2, "progress": False, "start_method": "fork"}
    # the same answers as pandas, for every kind of plan
    pd.testing.assert_series_equal(ezflow.apply(df, row_fn, axis=1, **kw), df.apply(row_fn, axis=1))
    pd.testing.assert_series_equal(ezflow.apply(df, chunk_fn, chunksize=333, **kw), chunk_fn(df))
    pd.testing.assert_series_equal(ezflow.apply(df.groupby("k"), group_sum, **kw), df.groupby("k").apply(group_sum))
    num = df[["a", "f", "k"]]
    pd.testing.assert_series_equal(ezflow.apply(num, np.sum, axis=0, **kw), num.apply(np.sum, axis=0))
    k = 3  # a closure: it is never pickled, the workers hold it as the caller does
    pd.testing.assert_series_equal(ezflow.apply(df, lambda d: d["a"] * k, **kw), df["a"] * k)

    warm = {p.pid for p in __import__("psutil").Process().children()}
    got = ezflow.apply(df, float_address, chunksize=1000, **kw)
    pids = {pid for pid, _, _ in got}
    for (pid, addr, in_segment), start in zip(got.iloc[::1000], range(0, len(df), 1000)):
        # no copy: the worker reads the very address the caller's frame has, outside any segment
        assert addr == df["f"].iloc[start:].to_numpy().__array_interface__["data"][0]
        assert not in_segment
    assert pids.isdisjoint(warm), "the call ran on a warm pool, forked before the frame was held"
    import psutil

    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], (
        "the call's own workers outlived it (they hold the caller's memory as it was)"
    )


def test_inherited_chunks_fail_and_skip_as_the_shared_ones_do(inherit_any_size):
    df = frame()
    kw = {"workers": 2, "progress": False, "chunksize": 500, "start_method": "fork"}
    with pytest.raises(ValueError, match="big") as info:  # the original type, as ever
        ezflow.apply(df, fails_on_big, **kw)
    assert isinstance(info.value, ezflow.TaskError)
    assert re.search(r"item [67] \(<rows 3[05]00\.\.3[49]99>\)", str(info.value))  # the chunk, by its rows
    kept = ezflow.apply(df, fails_on_big, errors="skip", **kw)
    assert list(kept.index) == list(range(3000))
    got = ezflow.apply(df, fails_on_big, errors="return", **kw)
    assert len(got) == len(df) and all(isinstance(v, ezflow.Failure) for v in got.iloc[3000:])


def test_a_worker_started_during_the_call_holds_the_frame_too(inherit_any_size):
    # a worker recycled after every chunk: each replacement is forked from the caller mid-call
    df = frame()
    got = ezflow.apply(
        df, float_address, workers=2, progress=False, chunksize=500, max_tasks_per_worker=1, start_method="fork"
    )
    assert len({pid for pid, _, _ in got}) >= 4
    assert not any(in_segment for _, _, in_segment in got)


def test_other_start_methods_and_checkpoints_keep_shared_memory(inherit_any_size, tmp_path):
    df = frame(400_000)  # chunks of 200,000 floats (1.6 MB): above the size that goes by shared memory
    got = ezflow.apply(df, float_address, workers=2, progress=False, chunksize=200_000, start_method="spawn")
    assert all(in_segment for _, _, in_segment in got)  # spawned workers inherit nothing: the segment
    path = tmp_path / "ck"
    first = ezflow.apply(df, chunk_fn, workers=2, progress=False, start_method="fork", checkpoint=path)
    pd.testing.assert_series_equal(first, chunk_fn(df))  # a checkpoint keys chunks by value: shared memory


# -- pickle-5 buffers through shared memory: no copy --------------------------------


def test_worker_maps_the_senders_segment_for_a_table_and_a_string_column():
    me = os.getpid()
    t = make_table(1 << 20)  # 8 MiB of int64 + ~6.9 MiB of text + 4 MiB of offsets
    [(worker, segs)] = ezflow.map(where_table, [t], workers=1, progress=False)
    assert len(segs) == 3 and all(s is not None for s in segs), segs
    # written by the parent, owned by it: ezf_<owner>_<creator>_...
    assert all(s.startswith(f"ezf_{me}_{me}_") for s in segs), segs
    s = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([pa.array([f"value {i}" for i in range(300_000)])])))
    assert isinstance(s.array, pd.arrays.ArrowStringArray)
    [(worker, segs)] = ezflow.map(where_string_column, [s], workers=1, progress=False)
    assert segs and all(x is not None and x.startswith(f"ezf_{me}_{me}_") for x in segs), segs
    ezflow.shutdown()


def test_a_large_table_result_arrives_through_shared_memory():
    me = os.getpid()
    [t] = ezflow.map(make_table, [1 << 20], workers=1, progress=False)
    assert t.equals(make_table(1 << 20))
    segs = where(table_buffers(t))
    assert len(segs) == 3 and all(s is not None for s in segs), segs
    creators = {s.split("_")[2] for s in segs}
    assert all(s.startswith(f"ezf_{me}_") for s in segs) and str(me) not in creators  # made by the worker
    del t
    ezflow.shutdown()


def test_a_table_goes_to_the_next_stage_without_a_copy():
    me = os.getpid()
    flow = ezflow.Flow([1 << 20, 1 << 19]).map(make_table, workers=1).map(where_table, workers=1)
    out = flow.collect(progress=False)
    for _pid, segs in out:
        assert segs and all(s is not None for s in segs), segs
        # the first stage's worker wrote it; the parent passed the reference on
        assert all(s.startswith(f"ezf_{me}_") and s.split("_")[2] != str(me) for s in segs), segs
    ezflow.shutdown()


def test_small_buffers_stay_in_the_pickle():
    t = pa.table({"x": np.arange(1000)})
    [(_pid, segs)] = ezflow.map(where_table, [t], workers=1, progress=False)
    assert segs == []  # nothing over the threshold: table_buffers lists only big ones
    from ezflow._transport import serialize
    from ezflow._transport.pickler import _sending

    with _sending(1 << 20):
        data = serialize.dumps(t, to_worker=True)
    assert data[:1] == b"P"  # no out-of-band buffer: an ordinary pickle
    ezflow.shutdown()


def test_read_only_buffers_arrive_read_only():
    a = np.arange(1 << 18, dtype=np.float64)
    a.flags.writeable = False
    buf = pa.py_buffer(a)  # a read-only Arrow buffer over 2 MiB
    arr = pa.Array.from_buffers(pa.float64(), len(a), [None, buf])
    [(ro, total)] = ezflow.map(_readonly_and_sum, [arr], workers=1, progress=False)
    assert ro and total == float(a.sum())
    ezflow.shutdown()


def _readonly_and_sum(arr):
    view = np.frombuffer(arr.buffers()[1], dtype=np.float64)
    return (not view.flags.writeable, float(view.sum()))


# -- memory: workers map their chunks, the parent stays near the frame ------------------


def chunk_rss(d):
    """In the worker: how much of the chunk is private memory (a copy) vs mapped segment."""
    import psutil  # noqa: F401 - the test skips without it

    shm_pages = sum(hi - lo for lo, hi, _ in mapped_segments())
    return int(d["s"].str.len().sum()), shm_pages


def test_workers_map_their_chunks():
    psutil = pytest.importorskip("psutil")
    del psutil
    df = frame(400_000)
    out = ezflow.apply(df, chunk_rss, workers=2, progress=False, chunksize=100_000)
    assert sum(n for n, _ in out) == int(df["s"].str.len().sum())
    assert all(pages > 0 for _, pages in out)  # each worker had its chunk's segments mapped
    ezflow.shutdown()


# -- a small /dev/shm (Docker's default 64 MiB) ------------------------------------------

SMALL_SHM = textwrap.dedent(
    """
    import sys, warnings
    sys.path.insert(0, {repo!r})
    import numpy as np, pandas as pd, ezflow
    from tests.test_dataframes import chunk_fn

    def main():
        n = 3_000_000  # ~140 MB: more than a 64 MiB /dev/shm holds
        df = pd.DataFrame({{"a": np.arange(n), "f": np.ones(n), "s": pd.array(["abcdefghij"] * n, dtype="str")}})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # forkserver: the chunks go through /dev/shm (under fork the workers would inherit them)
            kw = dict(workers=2, progress=False, chunksize=500_000, start_method="forkserver")
            got = ezflow.apply(df, chunk_fn, **kw)
            again = ezflow.apply(df, chunk_fn, **kw)
        assert got.equals(chunk_fn(df)) and again.equals(got)
        mine = [w for w in caught if issubclass(w.category, ezflow.SharedMemoryWarning)]
        print("WARNINGS", len(mine))
        for w in mine:
            print("TEXT", w.message)
        ezflow.shutdown()

    if __name__ == "__main__":
        main()
    """
)


def _run_small(tmp_path, prefix: list[str], env: dict) -> str:
    script = tmp_path / "small_shm.py"
    script.write_text(SMALL_SHM.format(repo=REPO))
    proc = subprocess.run(
        [*prefix, sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=REPO,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_small_dev_shm_works_and_warns_once(tmp_path):
    out = _run_small(tmp_path, [], {"EZFLOW_SHM_SIZE": "64M"})
    assert "WARNINGS 1" in out, out
    assert "--shm-size=2g" in out, out


def _can_unshare() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a private mount namespace"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64m tmpfs /dev/shm"], capture_output=True, timeout=30
    )
    return None if probe.returncode == 0 else "unshare -m / mount tmpfs not permitted here"


def test_a_real_64_mib_dev_shm(tmp_path):
    why = _can_unshare()
    if why:
        pytest.skip(why)
    # a private mount namespace with Docker's default /dev/shm: the segments live and die in there
    prefix = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"', "sh"]
    out = _run_small(tmp_path, prefix, {})
    assert "WARNINGS 1" in out, out
    assert "--shm-size=2g" in out, out


def test_apply_with_a_checkpoint(tmp_path):
    df = frame()
    path = tmp_path / "runs" / "scores"
    first = ezflow.apply(df, chunk_fn, workers=2, progress=False, checkpoint=path)
    again = ezflow.apply(df, chunk_fn, workers=2, progress=False, checkpoint=path)
    pd.testing.assert_series_equal(first, chunk_fn(df))
    pd.testing.assert_series_equal(again, first)


def test_apply_work_carrying_a_notebook_function_goes_by_value():
    # ezflow.apply wraps the user's function in a partial of its own module's worker function:
    # a warm worker forked before a notebook cell defined it must get it by value
    from functools import partial

    from ezflow._apply import _apply_rows
    from ezflow._transport.serialize import _by_value

    assert _by_value(partial(_apply_rows, lambda r: r))
    assert not _by_value(partial(_apply_rows, row_fn))
