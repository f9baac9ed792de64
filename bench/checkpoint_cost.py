"""python -m bench.checkpoint_cost [--quick]: what a checkpoint costs on W1 and W2.

Runs ``ezflow.map`` on the W1 and W2 inputs without and with
``checkpoint=`` (a fresh file each call, so every item is computed and
stored), alternating the two, and prints the median items/s of each and
their ratio; then the time of a second call that finds every result stored.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import ezflow  # noqa: E402
from bench import w1_tiny, w2_cpu  # noqa: E402

WORKERS = 2


def measure(module, quick: bool, repeat: int) -> dict:
    inp = module.make_inputs(quick)
    fn, items = inp.fn, inp.items
    expected = [fn(x) for x in items]
    ezflow.map(fn, items[:100], workers=WORKERS, progress=False)  # warm the pool
    tmp = tempfile.mkdtemp(prefix="ezflow-ck-")
    plain, stored, again = [], [], []
    try:
        for i in range(repeat):
            t = time.perf_counter()
            out = ezflow.map(fn, items, workers=WORKERS, progress=False)
            plain.append(time.perf_counter() - t)
            assert out == expected
            path = os.path.join(tmp, f"run{i}")
            t = time.perf_counter()
            out = ezflow.map(fn, items, workers=WORKERS, progress=False, checkpoint=path)
            stored.append(time.perf_counter() - t)
            assert out == expected
            t = time.perf_counter()
            out = ezflow.map(fn, items, workers=WORKERS, progress=False, checkpoint=path)
            again.append(time.perf_counter() - t)
            assert out == expected
        ezflow.shutdown()
        time.sleep(0.2)  # the writer closes the file (folding the WAL in) after the call returns
        last = os.path.join(tmp, f"run{repeat - 1}.sqlite")
        size = sum(os.path.getsize(p) for p in (last, last + "-wal") if os.path.exists(p))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(items)
    a, b = n / statistics.median(plain), n / statistics.median(stored)
    return {
        "workload": module.WORKLOAD.key,
        "items": n,
        "plain": a,
        "checkpoint": b,
        "ratio": b / a,
        "resume_s": statistics.median(again),
        "file_bytes": size,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.checkpoint_cost", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    for module in (w1_tiny, w2_cpu):
        r = measure(module, args.quick, args.repeat)
        print(
            f"{r['workload']}: {r['items']:,} items  without {r['plain']:,.0f} items/s  "
            f"with checkpoint {r['checkpoint']:,.0f} items/s  ratio {r['ratio']:.2f}  "
            f"re-run (all stored) {r['resume_s'] * 1e3:.1f} ms  file {r['file_bytes'] / 1024:.0f} KiB",
            flush=True,
        )
    ezflow.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
