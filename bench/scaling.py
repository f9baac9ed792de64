"""python -m bench --workers 1,2,4,...: the scaling curve here, and the parent's cost that bounds it.

Two workloads per worker count, ezflow.map beside multiprocessing.Pool.map:
  cpu   ~5 ms of pure-Python work per item (W2's), 60 items per worker
  tiny  x * 2 over 200,000 items (W1's)
Then the parent's own CPU time (all its threads, time.process_time) per
message, per item and per MiB moved, and the ceiling it implies: the parent
saturates when the work it must do per second reaches one core.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import statistics
import time

import ezflow
from ezflow._engine.stage import TARGET_PIECE_SECONDS

from ._work import calibrate_cpu_work, cpu_work, double

PIECE_SECONDS = TARGET_PIECE_SECONDS["process"]


def _median(fn, repeat: int, clock=time.perf_counter) -> float:
    """Median `clock` seconds one fn() takes: wall time by default, this process's CPU with time.process_time."""
    times = []
    for _ in range(repeat):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)


def curve(workers: list[int], repeat: int = 3) -> list[dict]:
    n_iter = calibrate_cpu_work(0.005)
    work = functools.partial(cpu_work, n_iter=n_iter)
    rows = []
    for w in workers:
        items = list(range(60 * w))
        tiny = range(200_000)
        row = {"workers": w}
        ezflow.map(double, range(1000), workers=w, progress=False)  # warm pool: measure the steady state
        row["ezflow cpu"] = len(items) / _median(lambda: ezflow.map(work, items, workers=w, progress=False), repeat)
        row["ezflow tiny"] = 200_000 / _median(lambda: ezflow.map(double, tiny, workers=w, progress=False), repeat)
        with multiprocessing.get_context("fork").Pool(w) as pool:
            pool.map(double, range(1000))
            row["Pool cpu"] = len(items) / _median(lambda: pool.map(work, items, chunksize=1), repeat)
            row["Pool tiny"] = 200_000 / _median(lambda: pool.map(double, tiny, chunksize=2000), repeat)
        rows.append(row)
    ezflow.shutdown()
    base = rows[0]
    for row in rows:
        for key in ("ezflow cpu", "ezflow tiny", "Pool cpu", "Pool tiny"):
            row[key + " x"] = row[key] / base[key]
    return rows


def parent_costs() -> dict:
    """The parent's CPU per message, per item and per MiB, measured with 2 workers."""
    ezflow.map(double, range(1000), workers=2, progress=False)
    n_msg = 20_000
    per_msg = _median(lambda: ezflow.map(double, range(n_msg), workers=2, chunksize=1, progress=False), 3, time.process_time) / n_msg
    n_items = 400_000
    per_item = _median(lambda: ezflow.map(double, range(n_items), workers=2, progress=False), 3, time.process_time) / n_items
    out = {"per_message_us": per_msg * 1e6, "per_item_us": per_item * 1e6}
    try:
        import numpy as np
    except ImportError:
        return out
    arrays = [np.ones(1 << 20) for _ in range(32)]  # 32 x 8 MiB, to a worker and back
    mib = 2 * 32 * 8
    ezflow.map(np.negative, arrays[:2], workers=2, progress=False)
    out["shm_per_mib_us"] = _median(lambda: ezflow.map(np.negative, arrays, workers=2, progress=False), 3, time.process_time) / mib * 1e6
    out["pickled_per_mib_us"] = (
        _median(lambda: ezflow.map(np.negative, arrays, workers=2, share_arrays=False, progress=False), 3, time.process_time) / mib * 1e6
    )
    ezflow.shutdown()
    return out


def ceilings(costs: dict, cores: tuple[int, ...] = (16, 64)) -> list[str]:
    """The arithmetic: what one parent core allows, and where it stops being enough."""
    msg, item = costs["per_message_us"], costs["per_item_us"]
    piece_ms = 1e3 * PIECE_SECONDS
    lines = [
        f"parent CPU: {msg:.1f} µs per message (a piece of one item), {item:.2f} µs per item in big pieces",
        f"  -> one parent core moves at most 1e6 / {msg:.1f} = {1e6 / msg:,.0f} messages/s, "
        f"or 1e6 / {item:.2f} = {1e6 / item / 1e6:.1f} M tiny items/s",
        "ceiling on N cores = min(what N workers compute, what one parent core moves); "
        "the parent saturates at N = 1e6 µs / (parent CPU per second of one worker)",
    ]
    for item_ms in (5.0, 1.0):
        per_worker = 1e3 / item_ms  # items/s one worker computes
        for label, items_per_msg in ((f"automatic pieces (~{piece_ms:g} ms each)", max(1.0, piece_ms / item_ms)),
                                     ("chunksize=1", 1.0)):
            msgs_per_worker = per_worker / items_per_msg
            per_worker_us = msgs_per_worker * msg + per_worker * item  # parent CPU per second of one worker
            sat = 1e6 / per_worker_us
            lines.append(
                f"  {item_ms:g} ms items, {label}: one worker costs the parent {msgs_per_worker:,.0f} x {msg:.1f} "
                f"+ {per_worker:,.0f} x {item:.2f} = {per_worker_us:,.0f} µs/s; "
                f"saturation at N = 1e6 / {per_worker_us:,.0f} = {sat:,.0f} workers"
            )
            for c in cores:
                need = c * per_worker_us / 1e6
                cap = min(c, sat) * per_worker
                verdict = "fine" if need < 0.5 else "near the limit" if need < 1 else "parent-bound: leave chunksize unset"
                lines.append(
                    f"    {c} cores: {c} x {per_worker:,.0f} = {c * per_worker:,.0f} items/s wanted, the parent needs "
                    f"{need:.2f} core -> ceiling {cap:,.0f} items/s ({verdict})"
                )
    lines.append(f"  tiny items: ceiling {1e6 / item / 1e6:.1f} M items/s on any number of cores (the parent's "
                 "share per item); W1 on 2 cores is already there")
    if "shm_per_mib_us" in costs:
        shm, pick = costs["shm_per_mib_us"], costs["pickled_per_mib_us"]
        lines.append(f"arrays: {shm:.0f} µs of parent CPU per MiB through shared memory "
                     f"(-> {1e6 / shm / 1024:,.1f} GiB/s a parent core can feed), {pick:.0f} µs per MiB pickled "
                     f"(-> {1e6 / pick / 1024:,.2f} GiB/s)")
    return lines


def main(workers: list[int], repeat: int = 3) -> int:
    print(f"scaling: {os.cpu_count()} cpus here, load avg {os.getloadavg()[0]:.2f}; workers {workers}; "
          f"median of {repeat}")
    rows = curve(workers, repeat)
    head = ("workers", "ezflow cpu", "x", "Pool cpu", "x", "ezflow tiny", "x", "Pool tiny", "x")
    print("  ".join(f"{h:>12}" for h in head))
    for r in rows:
        cells = [
            f"{r['workers']:>12}",
            f"{r['ezflow cpu']:>10,.0f}/s", f"{r['ezflow cpu x']:>11.2f}x",
            f"{r['Pool cpu']:>10,.0f}/s", f"{r['Pool cpu x']:>11.2f}x",
            f"{r['ezflow tiny'] / 1e6:>9.2f}M/s", f"{r['ezflow tiny x']:>11.2f}x",
            f"{r['Pool tiny'] / 1e6:>9.2f}M/s", f"{r['Pool tiny x']:>11.2f}x",
        ]
        print("  ".join(cells))
    print("  (cpu: ~5 ms items, 60 per worker; tiny: 200,000 x*2; x = speed vs the first row)")
    print()
    for line in ceilings(parent_costs()):
        print(line)
    return 0
