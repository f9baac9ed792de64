"""W7: tiny items on a dask cluster. ezflow's pieces against one task per item.

A `LocalCluster` of 2 worker processes x 1 thread (started here, closed at
the end) runs ``x*2`` over many ints:

- ``ezflow.map(double, items, backend=client)``: pieces of many items, one
  dask task each, a bounded window of futures;
- ``client.map(double, items)`` then ``f.result()`` per future: the plain
  dask way, one task per item;
- ``client.map`` then ``client.gather(futures)``: the same, results fetched
  in one call;
- ``client.map`` over hand-made batches (a list comprehension per task):
  what a dask user tunes by hand, for reference. Dask walks a task's list
  arguments element by element, which makes this slower than it looks;
  ezflow sends each piece as one bytes object for that reason.

One task per item costs the scheduler about a millisecond, so the
per-item peers run on fewer items (N_PEER) than ezflow (N_EZFLOW); the
rate column (items/s) is what compares. Target: ezflow >= 10x the plain
``client.map`` rate.

Run with the others (``python -m bench --only W7``) or alone
(``python -m bench.w7_dask [--quick]``).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from ._harness import CallTimeout, Context, Table, Workload, alarm, fmt_plain, fmt_rate, fmt_ratio, fmt_seconds
from ._work import double

N_EZFLOW = 200_000
N_PEER = 20_000
QUICK_EZFLOW = 20_000
QUICK_PEER = 2_000
BATCH = 10_000  # items per task for the hand-batched peer
TARGET_RATIO = 10.0


def double_batch(xs: list) -> list:
    """Apply ``double`` to a batch: the hand-batched peer's task."""
    return [double(x) for x in xs]


def dask_unavailable() -> str | None:
    """Return None if dask.distributed can be imported, else why not."""
    try:
        import distributed  # noqa: F401
    except ImportError as e:
        return f'dask.distributed not installed ({e}): pip install "ezflow[dask]"'
    return None


def impls(client: Any) -> list[tuple[str, str, Callable[[list], list], str]]:
    """Return (name, kind, fn(items) -> results, note) rows."""
    import ezflow

    def ez(items: list) -> list:
        return ezflow.map(double, items, backend=client, progress=False)

    def per_item_result(items: list) -> list:
        futures = client.map(double, items)
        return [f.result() for f in futures]

    def per_item_gather(items: list) -> list:
        return client.gather(client.map(double, items))

    def batched(items: list) -> list:
        chunks = [items[i:i + BATCH] for i in range(0, len(items), BATCH)]
        return [y for part in client.gather(client.map(double_batch, chunks)) for y in part]

    return [
        ("serial (builtin map)", "serial", lambda items: list(map(double, items)), ""),
        ("ezflow.map(backend=client)", "ezflow", ez, "adaptive pieces"),
        ("client.map + f.result() each", "plain", per_item_result, "one task per item"),
        ("client.map + client.gather", "peer", per_item_gather, "one task per item"),
        (f"client.map over batches of {BATCH:,}", "peer", batched, "hand-batched, list args"),
    ]


def _time(ctx: Context, fn: Callable[[list], list], items: list) -> tuple[list[float], str | None]:
    expected = [x * 2 for x in items]
    times: list[float] = []
    for _ in range(ctx.repeat):
        if times and sum(times) >= ctx.budget:
            break
        try:
            with alarm(ctx.timeout):
                t0 = time.perf_counter()
                out = fn(items)
                dt = time.perf_counter() - t0
        except CallTimeout as e:
            return times, f"timeout: {e}"
        except Exception as e:
            return times, f"error: {type(e).__name__}: {e}"[:160]
        if out != expected:
            return times, "WRONG output"
        times.append(dt)
    return times, None


def run(ctx: Context, wl: Workload) -> Table:
    """Start a local cluster, time every implementation, close the cluster."""
    reason = dask_unavailable()
    if reason:
        raise RuntimeError(reason)
    import distributed

    n_ez, n_peer = (QUICK_EZFLOW, QUICK_PEER) if ctx.quick else (N_EZFLOW, N_PEER)
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    ctx.log(f"[{wl.key}] cluster up in {time.perf_counter() - t0:.2f} s")
    rows = []
    try:
        client.submit(double, 1).result()  # workers warm before anything is timed
        for name, kind, fn, note in impls(client):
            n = n_peer if kind in ("plain", "peer") and "batches" not in name else n_ez
            items = list(range(n))
            times, problem = _time(ctx, fn, items)
            row: dict[str, Any] = {"impl": name, "kind": kind, "note": note, "items": n, "n": len(times)}
            if problem:
                row["status"], row["detail"] = problem.split(":")[0], problem
                ctx.log(f"[{wl.key}] {name}: {problem}")
            else:
                row["status"] = "ok"
                row["seconds"] = statistics.median(times)
                row["rate"] = n / row["seconds"]
                ctx.log(f"[{wl.key}] {name}: {n:,} items, median {row['seconds']:.4f} s")
            rows.append(row)
    finally:
        client.close()
        cluster.close()

    plain = next((r for r in rows if r["kind"] == "plain" and r.get("rate")), None)
    notes = []
    for r in rows:
        if plain is not None and r.get("rate"):
            r["vs_plain"] = r["rate"] / plain["rate"]
    ez = next((r for r in rows if r["kind"] == "ezflow" and r.get("rate")), None)
    if ez is not None and plain is not None:
        ok = ez["vs_plain"] >= TARGET_RATIO
        notes.append(
            f"ezflow items/s is {ez['vs_plain']:.0f}x plain client.map's "
            f"(target >= {TARGET_RATIO:g}x): {'PASS' if ok else 'FAIL'}"
        )
    notes.append(
        f"one-task-per-item peers run {n_peer:,} items (the scheduler's per-task cost makes "
        f"{n_ez:,} take minutes); compare the items/s column"
    )
    return Table(
        key=wl.key,
        title=wl.title,
        detail=f"x*2 over ints on LocalCluster(2 workers x 1 thread); ezflow and batches: {n_ez:,} items",
        columns=[
            ("impl", "implementation", fmt_plain),
            ("items", "items", lambda v: "" if v is None else f"{v:,}"),
            ("n", "n", fmt_plain),
            ("seconds", "seconds (median)", fmt_seconds),
            ("rate", "items/s", fmt_rate("items")),
            ("vs_plain", "vs client.map", fmt_ratio),
            ("note", "note", fmt_plain),
        ],
        rows=rows,
        notes=notes,
    )


WORKLOAD = Workload(key="W7", title="dask backend: tiny items, ezflow pieces vs one task per item", run=run)


if __name__ == "__main__":  # python -m bench.w7_dask [--quick]
    from ._harness import render

    quick = "--quick" in sys.argv[1:]
    print(render(run(Context(repeat=1 if quick else 3, quick=quick), WORKLOAD)))
