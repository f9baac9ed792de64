"""``python -m ezflow demo``: a short multi-stage job with live bars and a summary.

The job stands for a typical decode -> featurize -> score pipeline: three
stages of pure-Python CPU work, a batch step, and a filter, run once
serially and once with ezflow; it prints each stage's figures and the
speedup over serial.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import textwrap
import time

ITEMS = 800


def decode(i: int) -> bytes:
    """Stand for decoding a record: ~1 ms of hashing."""
    data = str(i).encode()
    for _ in range(6000):
        data = hashlib.sha256(data).digest()
    return data


def featurize(blob: bytes) -> list[int]:
    """Stand for feature extraction: ~1 ms of pure-Python arithmetic."""
    acc = 0
    for _ in range(700):
        for b in blob:
            acc = (acc * 31 + b) % 1_000_003
    return [acc % 97, acc % 89, acc % 83]


def interesting(features: list[int]) -> bool:
    """Keep about nine records in ten."""
    return features[0] % 10 != 0


def score(batch: list[list[int]]) -> list[float]:
    """Stand for a model scoring a batch at once."""
    return [sum(f) / 3.0 for f in batch]


def serial(n: int) -> list[float]:
    """Run the same job in one process, one item at a time."""
    feats = [f for f in (featurize(decode(i)) for i in range(n)) if interesting(f)]
    out: list[float] = []
    for start in range(0, len(feats), 32):
        out.extend(score(feats[start : start + 32]))
    return out


# -- telling the truth about the figure ------------------------------------------
# A speedup measured on a machine that other work shares says little about ezflow:
# the demo measures how much CPU time other processes took while it ran (Linux:
# /proc/stat's busy time less this process tree's own), and how much of a CPU its
# serial pass got, and says so beside the figure.


def speedup_words(t_serial: float, t_flow: float) -> str:
    """Say how ezflow's time compares with serial, in words that cannot mislead.

    "1.7x faster than serial", "1.2x slower than serial", or "about as fast as
    serial" when the two round to the same figure: never "0.90x faster".
    """
    if t_serial <= 0 or t_flow <= 0:
        return "too quick to compare with serial"
    faster = t_serial / t_flow
    if round(faster, 1) > 1.0:
        return f"{faster:.1f}x faster than serial"
    slower = t_flow / t_serial
    if round(slower, 1) > 1.0:
        return f"{slower:.1f}x slower than serial"
    return "about as fast as serial"


def busy_note(
    cpus: int,
    others: float | None,
    serial_share: float | None,
    load_before: float | None = None,
) -> str | None:
    """Explain a figure measured while other work used the CPUs, or return None on a quiet machine.

    `others`: CPUs that other processes kept busy on average while the demo ran
    (None: not measurable here). `serial_share`: the fraction of one CPU the
    serial pass got (its CPU time over its wall time; below ~0.9 something else
    took the CPU). `load_before`: the 1-minute load average before the demo
    started, used only when `others` is unknown (it lags by a minute, and once
    the demo runs it counts the demo's own workers).
    """
    reasons = []
    if others is not None and others >= 0.25:
        left = max(cpus - others, 0.0)
        reasons.append(
            f"other processes kept about {others:.1f} of the {cpus} CPUs busy while it ran, "
            f"leaving about {left:.1f} for the demo"
        )
    if serial_share is not None and serial_share < 0.9:
        reasons.append(f"the serial pass got only {serial_share:.0%} of a CPU")
    if others is None and load_before is not None and load_before >= 0.5:
        reasons.append(f"the load average was {load_before:.1f} on {cpus} CPUs when it started")
    if not reasons:
        return None
    text = (
        "the machine was busy: " + "; ".join(reasons) + ". "
        "The figure says more about the machine than about ezflow: run it again when it is quiet."
    )
    return textwrap.fill(text, width=88, initial_indent="note: ", subsequent_indent="      ")


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _busy_ticks() -> int | None:
    """CPU time spent busy on the whole machine so far, in clock ticks (Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    return sum(fields[:3]) + sum(fields[5:8])


def _tree_ticks() -> int:
    """CPU time of this process and its descendants (the workers), in clock ticks."""
    me = os.getpid()
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "pid (comm)": state ppid ... utime (14th field) stime (15th)
        parent[int(entry)] = int(rest[1])
        ticks[int(entry)] = int(rest[11]) + int(rest[12])
    total = 0
    for pid, t in ticks.items():
        p, depth = pid, 0
        while p and p != me and depth < 64:
            p, depth = parent.get(p, 0), depth + 1
        if p == me:
            total += t
    return total


class CpuWatch:
    """How much CPU other processes took between start() and stop(), in CPUs on average."""

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start: tuple[float, int, int] | None = None

    def start(self) -> None:
        busy = _busy_ticks()
        self._start = None if busy is None else (time.perf_counter(), busy, _tree_ticks())

    def stop(self) -> float | None:
        busy = _busy_ticks()
        if self._start is None or busy is None:
            return None
        t0, busy0, mine0 = self._start
        wall = time.perf_counter() - t0
        if wall <= 0:
            return None
        others = (busy - busy0) - (_tree_ticks() - mine0)
        return max(others / self._hz / wall, 0.0)


def demo(n: int, progress: object) -> int:
    """Run the demo and print its figures; return an exit status."""
    import ezflow

    cpus = ezflow.NUM_CPUS
    print(f"ezflow demo: {n} records through decode -> featurize -> filter -> batch(32) -> score")
    print(f"on {cpus} CPUs; first serially, then with ezflow\n")
    load_before = _load()
    print("serial:  running the job in this process, one record at a time (no bars: plain Python) ...", flush=True)
    watch_serial, watch_flow = CpuWatch(), CpuWatch()
    watch_serial.start()
    t0, c0 = time.perf_counter(), time.process_time()
    want = serial(n)
    t_serial, c_serial = time.perf_counter() - t0, time.process_time() - c0
    others_serial = watch_serial.stop()
    print(f"serial:  {t_serial:6.2f} s")
    print("ezflow:  the same job as a Flow: decode and featurize in worker processes ...", flush=True)

    flow = (
        ezflow.Flow(range(n))
        .map(decode)
        .map(featurize)
        .filter(interesting, mode="thread", workers=1)
        .batch(32, timeout=0.1)
        .map(score, mode="thread", workers=1)
        .unbatch()
    )
    if progress and not sys.stderr.isatty():
        # A pipe or a file (`demo 2>&1 | cat`, `> demo.txt 2>&1`): a status line a second,
        # no bars and no control codes; the summary below is printed once, on stdout.
        from ._views.text import TextObserver

        progress = TextObserver(interval=1.0, final_summary=False)
    watch_flow.start()
    t0 = time.perf_counter()
    got = flow.collect(progress=progress)
    t_flow = time.perf_counter() - t0
    others_flow = watch_flow.stop()
    if got != want:
        print("ezflow's results differ from the serial run", file=sys.stderr)
        return 1
    print(f"ezflow:  {t_flow:6.2f} s  ->  {speedup_words(t_serial, t_flow)} (the ceiling on {cpus} CPUs is {cpus}x)")
    known = [o for o in (others_serial, others_flow) if o is not None]
    note = busy_note(
        cpus,
        max(known) if known else None,
        c_serial / t_serial if t_serial > 0 else None,
        load_before,
    )
    print(f"{note}\n" if note else "")
    try:
        from ._views.figures import summary

        print(summary(flow.stats))
    except ImportError:
        print(repr(flow.stats))
    ezflow.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m ezflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run a short multi-stage job with progress bars")
    d.add_argument("-n", type=int, default=ITEMS, help=f"records to process (default {ITEMS})")
    d.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.n, not args.no_progress)
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
