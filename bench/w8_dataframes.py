"""W8: a DataFrame of about 1 GB (int, float and Arrow string columns), two functions, six ways.

The frame: 1M rows (``--quick``: 100k) of 8 int64, 8 float64 and 2 Arrow
string columns (pandas' ``str`` dtype, ~430 characters a value): about
1 KiB a row. Two functions, each applied by every row:

- rows: a pure-Python function of one row, ``df.apply(row_score, axis=1)``;
- chunks: a vectorised function of a chunk of rows (numpy on the numbers,
  Arrow string kernels on the text), ``chunk_score(df)``; both return one
  float per row (a Series).

Rows (2 workers each; every one splits the frame its own documented way):

- serial pandas: the call on the whole frame;
- pandarallel ``df.parallel_apply(row_score, axis=1)`` (it has no per-chunk
  call, so no chunks row). pandarallel 1.6.5 does not import with pandas 3:
  its row runs in a pandas 2 interpreter when one is found
  (``$W8_PANDAS2_PYTHON``, default /tmp/pd23/bin/python: ``python -m venv
  --system-site-packages /tmp/pd23 && /tmp/pd23/bin/pip install "pandas==2.3.*"
  pandarallel``), else the row says why not;
- ``multiprocessing.Pool(2).map`` over 16 row chunks (pickled both ways);
- joblib ``Parallel(n_jobs=2)`` over 16 row chunks (numpy blocks over 1 MB
  memmapped, the rest pickled);
- dask.dataframe ``from_pandas(npartitions=16).map_partitions(...)`` on the
  processes scheduler;
- ezflow: ``ezflow.apply(df, row_score, axis=1)`` / ``ezflow.apply(df, chunk_score)``.

Every row runs in a fresh interpreter that builds the same frame (seeded),
so that peak memory belongs to that row alone: "parent peak" is the most
RSS the calling process held during the call less what the interpreter
held before building the frame (the frame itself is in it: 1.00x is the
floor; sampled every 20 ms), "worker peak" the most private memory (USS)
any one child process held (RSS would count the frame pages a forked child
shares with its parent; sampled every 0.1 s).
Outputs are checked against serial (sum and length of the result Series).
Targets (issue 27): ezflow >= 1.0x the best peer and >= 1.6x serial for
both functions; ezflow's parent peak <= 1.3x the frame (plus the
interpreter) and below pandarallel's.
Run: ``python -m bench --only W8 --quick`` (or ``python -m bench.w8_dataframes``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from ._harness import Table, add_ratios, fmt_plain, fmt_rate, fmt_ratio, fmt_seconds
from ._harness import Workload as _Workload

ROWS_FULL = 1_000_000
ROWS_QUICK = 100_000
WORKERS = 2
PEER_CHUNKS = 16  # how the peers without a chunking of their own split the frame
PANDAS2 = os.environ.get("W8_PANDAS2_PYTHON", "/tmp/pd23/bin/python")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INTS = [f"i{k}" for k in range(8)]
FLOATS = [f"f{k}" for k in range(8)]
TEXTS = ["s0", "s1"]


def make_frame(rows: int):
    """The same frame in every interpreter (seeded)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    rng = np.random.default_rng(8)
    cols: dict = {}
    for name in INTS:
        cols[name] = rng.integers(0, 1000, rows)
    for name in FLOATS:
        cols[name] = rng.random(rows)
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])
    vocab = [" ".join(rng.choice(words, rng.integers(50, 90))) for _ in range(2000)]
    pool = pa.array(vocab, pa.large_string())
    for name in TEXTS:
        picked = pa.chunked_array([pool.take(pa.array(rng.integers(0, len(vocab), rows)))])
        if pd.__version__.startswith("2."):
            cols[name] = pd.Series(pd.arrays.ArrowStringArray(picked))  # "string[pyarrow]", no copy
        else:
            cols[name] = pd.Series(picked, dtype="str")  # pandas 3's default text dtype, no copy
    df = pd.DataFrame(cols, copy=False)  # the columns as made: no second copy of the text
    pa.default_memory_pool().release_unused()  # what building the text left in Arrow's allocator
    return df


# --- the two functions (module level: every peer pickles them by name) -------------


def row_score(r) -> float:
    """Pure Python on one row."""
    text = r["s0"]
    score = 0.0
    for name in ("i0", "i1", "i2", "i3"):
        score += r[name] * r["f" + name[1]]
    return score + text.count("eta") + len(r["s1"]) / 100


def chunk_score(d):
    """Vectorised on a chunk: numpy on the numbers, Arrow string kernels on the text."""
    import numpy as np
    import pandas as pd

    x = d[FLOATS].to_numpy()
    n = d[INTS].to_numpy()
    acc = np.zeros(len(d))
    for k in range(6):
        acc += np.sin(x * (k + 1)).sum(axis=1) * np.sqrt(n[:, k] + 1.0)
    text = d["s0"].str.count("eta").to_numpy(dtype="float64") + d["s1"].str.len().to_numpy(dtype="float64") / 100
    return pd.Series(acc + text, index=d.index)


def _rows(chunk):
    return chunk.apply(row_score, axis=1)


FUNCS = {"rows": (row_score, _rows), "chunks": (chunk_score, chunk_score)}


def _chunks(df, k: int = PEER_CHUNKS) -> list:
    step = -(-len(df) // k)
    return [df.iloc[a : a + step] for a in range(0, len(df), step)]


# --- one row, in this interpreter -------------------------------------------------


def run_serial(df, func: str):
    whole, per_chunk = FUNCS[func]
    return per_chunk(df) if func == "rows" else whole(df)


def run_pandarallel(df, func: str):
    from pandarallel import pandarallel

    pandarallel.initialize(nb_workers=WORKERS, progress_bar=False, verbose=0)
    if func != "rows":
        raise RuntimeError("pandarallel has no per-chunk call")
    return df.parallel_apply(row_score, axis=1)


def run_pool(df, func: str):
    import multiprocessing

    import pandas as pd

    with multiprocessing.Pool(WORKERS) as pool:
        parts = pool.map(FUNCS[func][1], _chunks(df), chunksize=1)
    return pd.concat(parts)


def run_joblib(df, func: str):
    import pandas as pd
    from joblib import Parallel, delayed

    fn = FUNCS[func][1]
    return pd.concat(Parallel(n_jobs=WORKERS)(delayed(fn)(c) for c in _chunks(df)))


def run_dask(df, func: str):
    import dask
    import dask.dataframe as dd

    ddf = dd.from_pandas(df, npartitions=PEER_CHUNKS)
    out = ddf.map_partitions(FUNCS[func][1], meta=("score", "float64"))
    with dask.config.set(scheduler="processes", num_workers=WORKERS):
        return out.compute()


def run_ezflow(df, func: str):
    import ezflow

    if func == "rows":
        return ezflow.apply(df, row_score, axis=1, workers=WORKERS, progress=False)
    return ezflow.apply(df, chunk_score, workers=WORKERS, progress=False)


RUNNERS = {
    "serial pandas": ("serial", run_serial),
    "pandarallel": ("peer", run_pandarallel),
    "Pool.map(16 chunks)": ("peer", run_pool),
    "joblib(16 chunks)": ("peer", run_joblib),
    "dask map_partitions(16)": ("peer", run_dask),
    "ezflow.apply": ("ezflow", run_ezflow),
}


class _Peaks:
    """Sample this process's RSS every 20 ms and each child's private memory (USS) every 0.1 s, during a call.

    A child's RSS would count the pages it shares with the parent it was
    forked from (the whole frame, never copied); its USS counts only what
    it holds alone: chunks it unpickled, its own results.
    """

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.parent = self.me.memory_info().rss
        self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        tick = 0
        while not self._stop.is_set():
            self.parent = max(self.parent, self.me.memory_info().rss)
            tick += 1
            try:  # a child's USS costs a walk of its page tables: every 5th tick
                for child in self.me.children(recursive=True) if tick % 5 == 1 else ():
                    try:
                        self.worker = max(self.worker, child.memory_full_info().uss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            self._stop.wait(0.02)

    def __enter__(self) -> _Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_row(name: str, func: str, rows: int) -> dict:
    """Build the frame, run one row once, and say how it went (what a child prints)."""
    import gc

    import numpy  # noqa: F401 - the interpreter with its libraries, before the frame
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    interp = _Peaks().parent
    df = make_frame(rows)
    frame = int(df.memory_usage(index=True, deep=True).sum())
    gc.collect()
    base = _Peaks().parent
    with _Peaks() as peaks:
        t0 = time.perf_counter()
        out = RUNNERS[name][1](df, func)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "frame": frame,
        "interpreter": interp,
        "before": base,
        "parent_peak": peaks.parent,
        "worker_peak": peaks.worker,
        "n": int(len(out)),
        "sum": float(out.sum()),
    }


# --- the table ------------------------------------------------------------------------


def _python_for(name: str) -> tuple[str | None, str]:
    """The interpreter that runs a row, or None and why not."""
    if name != "pandarallel":
        return sys.executable, ""
    probe = subprocess.run([sys.executable, "-c", "import pandarallel"], capture_output=True, text=True)
    if probe.returncode == 0:
        return sys.executable, ""
    why = (probe.stderr.strip().splitlines() or ["?"])[-1].split(" from ")[0]  # the error, not its path
    if os.path.exists(PANDAS2):
        ok = subprocess.run([PANDAS2, "-c", "import pandarallel, pandas"], capture_output=True, text=True)
        if ok.returncode == 0:
            return PANDAS2, f"run with {PANDAS2} (pandas 2); here: {why}"
    return None, f"{why}; set W8_PANDAS2_PYTHON to a pandas 2 interpreter with pandarallel"


def _child(python: str, name: str, func: str, rows: int, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [python, "-m", "bench.w8_dataframes", "--row", name, func, str(rows)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(tail[:200])
    return json.loads(lines[-1])


def run(ctx, wl) -> Table:
    rows = ROWS_QUICK if ctx.quick else ROWS_FULL
    out: list = []
    frame = 0
    for func in ("rows", "chunks"):
        # every row's runs interleaved (run 1 of each, then run 2 of each, ...): a machine
        # that slows down for a minute slows every row alike, not the rows measured then
        table_rows, live = [], []
        for name, (kind, _fn) in RUNNERS.items():
            label = f"{name} [{func}]"
            row = {"impl": label, "kind": kind, "status": "ok", "detail": "", "note": ""}
            python, why = _python_for(name)
            if name == "pandarallel" and func != "rows":
                python, why = None, "no per-chunk call in pandarallel (parallel_apply is per row or per group)"
            table_rows.append(row)
            if python is None:
                row.update(status="not available", detail=why)
                continue
            row["note"] = why
            live.append((row, name, python, []))
        last: dict = {}
        for _ in range(ctx.repeat):
            for row, name, python, times in live:
                if row["status"] != "ok" or sum(times) > ctx.budget:
                    continue
                try:
                    got = _child(python, name, func, rows, ctx.timeout)
                except Exception as e:
                    row.update(status="error", detail=str(e))
                    continue
                times.append(got["seconds"])
                last[row["impl"]] = got
                ctx.log(f"[W8] {row['impl']}: {got['seconds']:.2f} s, parent peak {got['parent_peak'] >> 20} MiB")
        ref = next((last.get(row["impl"]) for row, *_ in live if row["kind"] == "serial"), None)
        for row, _name, _python, times in live:
            got = last.get(row["impl"])
            if got is None or row["status"] != "ok":
                continue
            frame = got["frame"]
            if ref is not None and got is not ref and (
                got["n"] != ref["n"] or abs(got["sum"] - ref["sum"]) > 1e-6 * abs(ref["sum"])
            ):
                row.update(status="WRONG", detail=f"n={got['n']} sum={got['sum']!r}, expected {ref['sum']!r}")
            times.sort()
            row.update(
                seconds=times[len(times) // 2], n=len(times), rate=rows / times[len(times) // 2],
                parent=(got["parent_peak"] - got["interpreter"]) / got["frame"],
                worker=got["worker_peak"] / got["frame"],
                parent_mib=got["parent_peak"] >> 20, before_mib=got["before"] >> 20,
                samples=[round(t, 3) for t in times],
            )
        add_ratios(table_rows)
        out.extend(table_rows)
    notes = [
        f"frame: {frame / 1e9:.2f} GB in memory. parent peak: the calling process's most RSS during the call, "
        "less the interpreter's before the frame was built (so the frame itself counts: 1.00x is the floor); "
        "worker peak: the most private memory (USS) one child held"
    ]
    for func in ("rows", "chunks"):
        ours = next((r for r in out if r["impl"] == f"ezflow.apply [{func}]" and r.get("seconds")), None)
        par = next((r for r in out if r["impl"] == "pandarallel [rows]" and r.get("seconds")), None)
        if ours:
            notes.append(
                f"{func}: ezflow {ours.get('vs_serial') or 0:.2f}x serial (target >= 1.6x), "
                f"{ours.get('vs_best_peer') or 0:.2f}x best peer (target >= 1.0x), parent peak "
                f"{ours['parent']:.2f}x frame (target <= 1.3x)"
                + (f", pandarallel's {par['parent']:.2f}x" if par and func == "rows" else "")
            )
    return Table(
        key=wl.key, title=wl.title, detail=f"{rows:,} rows, {WORKERS} workers; each row in a fresh interpreter",
        columns=[
            ("impl", "implementation", fmt_plain),
            ("n", "n", fmt_plain),
            ("seconds", "seconds (median)", fmt_seconds),
            ("rate", "rows/s", fmt_rate("items")),
            ("vs_serial", "vs serial", fmt_ratio),
            ("vs_best_peer", "vs best peer", fmt_ratio),
            ("parent", "parent peak / frame", lambda v: "" if v is None else f"{v:.2f}x"),
            ("worker", "worker peak / frame", lambda v: "" if v is None else f"{v:.2f}x"),
            ("note", "note", fmt_plain),
        ],
        rows=out, notes=notes,
    )


WORKLOAD = _Workload(
    key="W8",
    title="DataFrames: ~1 GB frame (int, float, Arrow strings), row-wise and per-chunk functions",
    run=run,
)


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--row":  # a child: one row, one JSON line
        print(json.dumps(one_row(sys.argv[2], sys.argv[3], int(sys.argv[4]))), flush=True)
        sys.exit(0)
    from bench.__main__ import main

    sys.exit(main(["--only", "W8", *sys.argv[1:]]))
