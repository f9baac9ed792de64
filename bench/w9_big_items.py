"""W9: big pickled items. 16 items of ~0.3 s CPU each, 2 workers (ideal 2.4 s),
each carrying 5 MB or 20 MB of pickled input: one `bytes` object, or a list
of short distinct strings (records, a DataFrame's string column). Nothing
here is a numpy array: every byte goes through each library's pickling and
its pipes, so the row shows whether the next item's bytes travel while its
worker computes, and whether one worker's full pipe holds up the other's."""

from __future__ import annotations

import functools
import os

from ._harness import Impl, Table, Workload, fmt_plain, run_throughput
from ._peers import (
    MapInput,
    ezflow_map,
    ezflow_unavailable,
    joblib_map,
    pool_default_chunksize,
    pool_map,
    ppe_map,
    serial_map,
)
from ._work import calibrate_cpu_work, cpu_work

N_ITEMS = 16
TARGET_S = 0.3
PAYLOADS = (("bytes", 5), ("bytes", 20), ("strings", 5), ("strings", 20))  # kind, MB pickled
STRING_CHARS = 48  # a pickled string of this length takes 48 + 3 bytes

_calibrated: dict[str, int] = {}


def heavy(payload, n_iter):
    """~0.3 s of CPU seeded by the payload; returns something small (the payload's length and the work's result)."""
    return len(payload), cpu_work(len(payload), n_iter)


def make_payload(kind: str, mb: int, i: int):
    """One item's input: distinct objects per item, so no pickler shares anything between items."""
    size = mb * 1_000_000
    if kind == "bytes":
        return os.urandom(16) + bytes([i % 256]) * (size - 16)
    n = size // (STRING_CHARS + 3)
    stem = f"item {i:02d} row "
    return [f"{stem}{j:012d}".ljust(STRING_CHARS, ".") for j in range(n)]


def make_inputs(kind: str, mb: int, quick: bool) -> MapInput:
    if "n_iter" not in _calibrated:  # once per run, same work for everyone
        _calibrated["n_iter"] = calibrate_cpu_work(TARGET_S, probes=3)
    fn = functools.partial(heavy, n_iter=_calibrated["n_iter"])
    n = 8 if quick else N_ITEMS
    return MapInput(fn, [make_payload(kind, mb, i) for i in range(n)])


def mpire_map_whole(inp: MapInput):
    """mpire's map, each item wrapped in a 1-tuple: mpire unpacks a list item into positional arguments."""
    from mpire import WorkerPool

    with WorkerPool(n_jobs=2) as pool:
        return pool.map(inp.fn, [(x,) for x in inp.items])


def impls(inp: MapInput) -> list[Impl]:
    tuned = pool_default_chunksize(len(inp.items))
    return [
        Impl("serial (builtin map)", serial_map, kind="serial"),
        Impl("multiprocessing.Pool.map", pool_map, note=f"default chunksize={tuned}"),
        Impl("ProcessPoolExecutor.map chunksize=1", ppe_map),
        Impl("joblib.Parallel(n_jobs=2)", joblib_map, note="batch_size=auto"),
        Impl("mpire.WorkerPool(2).map", mpire_map_whole, note="items as 1-tuples (mpire unpacks lists)"),
        Impl("ezflow.map", ezflow_map, kind="ezflow", unavailable=ezflow_unavailable, note="progress=False"),
    ]


def run(ctx, wl) -> Table:
    """One table: the same implementations for each payload, ratios within each payload."""
    rows = []
    detail = ""
    for kind, mb in PAYLOADS:
        label = f"{mb} MB {kind}"
        sub = Workload(
            key=f"W9 {label}",
            title=label,
            make_inputs=functools.partial(make_inputs, kind, mb),
            impls=impls,
            unit="items",
            amount=len,
            describe=lambda inp, label=label: (
                f"{len(inp.items)} items of ~{TARGET_S:g} s CPU (n_iter={inp.fn.keywords['n_iter']:,}), "
                f"each with {label} of pickled input"
            ),
        )
        table = run_throughput(ctx, sub)
        detail = table.detail
        for r in table.rows:
            r["payload"] = label
            rows.append(r)
    # ratios stay within a payload: each sub-table computed its own
    columns = [("payload", "payload", fmt_plain)] + [c for c in table.columns if c[0] != "rate"]
    return Table(
        key=wl.key,
        title=wl.title,
        detail=detail.split(", each with")[0] + "; payloads: " + ", ".join(f"{mb} MB {k}" for k, mb in PAYLOADS),
        columns=columns,
        rows=rows,
        notes=["vs best peer compares rows of the same payload; ideal time is 16 x 0.3 s / 2 = 2.4 s"],
    )


WORKLOAD = Workload(
    key="W9",
    title="big pickled items: 16 x ~0.3 s CPU with 5 / 20 MB of bytes or strings each, workers=2",
    unit="items",
    run=run,
)
