"""Where the parent's CPU goes per piece for W1: cProfile on every parent thread, CPU clock.

    python -m bench.parent_profile [--chunksize N] [--runs 40]

W1's inputs (a list of 200,000 ints, ``x * 2``, workers=2, a warm pool); with
--chunksize 1, 20,000 items in one-item pieces. First the run without a
profiler (median wall and parent CPU, ``time.process_time`` covers every
thread of this process), then the same runs with a ``cProfile.Profile`` on
the CPU clock in each thread the engine starts (``threading.setprofile``
installs it) and one on the calling thread. Functions are grouped into
pickling, syscalls, locks and hand-offs, ezflow's own bookkeeping and the
rest; each group's share of the profiled CPU, times the unprofiled parent
CPU per piece, gives its µs per piece (the profiler's own overhead is spread
evenly, which is why shares, not profiled times, are converted).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import threading
import time

import ezflow

from ._work import double

TOP = 15
GROUPS = ("pickling", "syscalls and polling", "locks, conditions, hand-offs", "ezflow bookkeeping", "builtins and other")


def group(key: tuple[str, int, str]) -> str:
    """Return the group a pstats function key belongs to."""
    path, _, name = key
    if "pickle" in name or "BytesIO" in name or any(m in path for m in ("serialize.py", "link.py", "pickler.py")):
        return "pickling"
    if any(s in name for s in ("posix.write", "posix.read", "poll", "select", "io.open", "readline")) or any(
        m in path for m in ("connection.py", "selectors.py", "psutil")
    ):
        return "syscalls and polling"
    if "lock" in name or "start_new_thread" in name or any(m in path for m in ("threading.py", "channel.py")):
        return "locks, conditions, hand-offs"
    if "/ezflow/" in path:
        return "ezflow bookkeeping"
    return "builtins and other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunksize", type=int, default=None, help="fixed piece size (default: automatic pieces)")
    ap.add_argument("--runs", type=int, default=None, help="runs per measurement (default 40; 5 with --chunksize)")
    args = ap.parse_args()
    cs = args.chunksize
    runs = args.runs or (40 if cs is None else 5)
    items = list(range(200_000 if cs is None else 20_000))

    def one() -> None:
        ezflow.map(double, items, workers=2, chunksize=cs, progress=False)

    ezflow.map(double, range(5000), workers=2, progress=False)  # warm pool: the steady state
    walls, cpus = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        one()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    wall, cpu = statistics.median(walls), statistics.median(cpus)

    profiles: list[cProfile.Profile] = []

    def install(frame: object, event: str, arg: object) -> None:
        prof = cProfile.Profile(time.thread_time)
        profiles.append(prof)
        prof.enable()  # replaces this hook for the rest of the thread

    # the engine's loops run on kept threads (`_core.threads`), started before the
    # profiler: each loop it hands one gets a profile of its own
    from ezflow._core import threads as kept

    plain_run = kept._run

    def profiled_run(job: kept.Job) -> None:
        prof = cProfile.Profile(time.thread_time)
        profiles.append(prof)
        prof.enable()
        try:
            plain_run(job)
        finally:
            prof.disable()

    caller = cProfile.Profile(time.thread_time)
    threading.setprofile(install)  # type: ignore[arg-type]
    kept._run = profiled_run
    try:
        for _ in range(runs):
            caller.enable()
            one()
            caller.disable()
    finally:
        kept._run = plain_run
        threading.setprofile(None)  # type: ignore[arg-type]
    ezflow.shutdown()  # the pool's threads end, and with them their profiles
    st = pstats.Stats(caller)
    for prof in profiles:
        st.add(prof)
    table = st.stats  # type: ignore[attr-defined]
    pieces = sum(v[1] for k, v in table.items() if k[2] == "_cut" and k[0].endswith("stage.py")) / runs
    total = sum(v[2] for v in table.values())
    per_piece = cpu / pieces * 1e6

    print(f"{len(items):,} items, {'automatic pieces' if cs is None else f'chunksize={cs}'}, workers=2, "
          f"median of {runs}: wall {wall * 1e3:.1f} ms ({len(items) / wall / 1e6:.2f} M items/s), parent CPU "
          f"{cpu * 1e3:.1f} ms, {pieces:.1f} pieces -> {per_piece:.0f} µs of parent CPU per piece")
    print(f"profiled: {total / runs * 1e3:.1f} ms of CPU per run in {len(profiles) // runs + 1} threads "
          f"(the profiler's overhead is spread over the shares)")
    shares = dict.fromkeys(GROUPS, 0.0)
    for k, v in table.items():
        shares[group(k)] += v[2] / total
    for g in GROUPS:
        print(f"  {g:30s} {shares[g]:6.1%}  {shares[g] * per_piece:7.1f} µs/piece")
    print("top functions:")
    for k, v in sorted(table.items(), key=lambda kv: -kv[1][2])[:TOP]:
        share = v[2] / total
        print(f"  {share:6.1%}  {share * per_piece:7.1f} µs/piece  {v[1] / runs / pieces:5.1f} calls/piece  "
              f"{k[0].rsplit('/', 1)[-1]}:{k[1]}({k[2]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
