"""What worker recycling and the memory guard cost, under fork and spawn.

    python bench/recycle_cost.py [--repeat 3] [--items 400]

1. W2-like items (~5 ms of pure-Python CPU each, workers=2): throughput with
   recycling off, max_tasks_per_worker=100 and 25, and with max_memory set
   far above what the workers use (the guard's own cost: prefetch 1, one RSS
   sample per piece, a sampler thread at 20 Hz).
2. The cost of one replacement: 200 trivial items with max_tasks_per_worker=1
   (one worker process per item) against recycling off, divided by the
   replacements made.

Medians of --repeat runs; the machine's load at the time is printed, since
the figures are wall-clock on shared cores.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's ezflow and bench

import ezflow  # noqa: E402
from bench._work import calibrate_cpu_work, cpu_work  # noqa: E402


def timed(fn, items, **opts) -> tuple[float, int]:
    ezflow.shutdown()  # every run starts its own workers: no warm pool from the previous one
    flow = ezflow.Flow(items).map(fn, workers=2, **opts)
    t0 = time.perf_counter()
    out = flow.collect(progress=False)
    dt = time.perf_counter() - t0
    assert len(out) == len(items)
    return dt, flow.stats[0].workers_recycled


def median_run(repeat: int, fn, items, **opts) -> tuple[float, int]:
    runs = [timed(fn, items, **opts) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), runs[0][1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--items", type=int, default=400)
    args = p.parse_args()
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    n_iter = calibrate_cpu_work(0.005)
    w2 = functools.partial(cpu_work, n_iter=n_iter)
    items = list(range(args.items))
    for method in ("fork", "spawn"):
        print(f"\n== start_method={method}")
        base, _ = median_run(args.repeat, w2, items, start_method=method)
        print(f"W2 {len(items)} items, recycling off:        {len(items) / base:7.0f} items/s  ({base:.2f} s)")
        for n in (100, 25):
            dt, rec = median_run(args.repeat, w2, items, start_method=method, max_tasks_per_worker=n)
            print(
                f"W2 max_tasks_per_worker={n:<3}:             {len(items) / dt:7.0f} items/s  ({dt:.2f} s, "
                f"{rec} replacements, {dt / base:.2f}x the time)"
            )
        dt, _ = median_run(args.repeat, w2, items, start_method=method, max_memory="8GB")
        print(f"W2 max_memory='8GB' (never reached):   {len(items) / dt:7.0f} items/s  ({dt:.2f} s, {dt / base:.2f}x)")
        tiny = list(range(200))
        off, _ = median_run(args.repeat, abs, tiny, start_method=method, chunksize=1)
        one, rec = median_run(args.repeat, abs, tiny, start_method=method, max_tasks_per_worker=1)
        print(
            f"one replacement: {(one - off) / rec * 1e3:6.1f} ms wall, 2 workers "
            f"(200 items with max_tasks_per_worker=1: {one:.2f} s against {off:.2f} s; {rec} replacements)"
        )
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
