"""``python -m ezflow demo``: a short multi-stage job with live bars and a summary.

The job stands for a typical decode -> featurize -> score pipeline: three
stages of pure-Python CPU work, a batch step, and a filter, run once
serially and once with ezflow; it prints each stage's figures and the
speedup over serial.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
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


def demo(n: int, progress: object) -> int:
    """Run the demo and print its figures; return an exit status."""
    import ezflow

    print(f"ezflow demo: {n} records through decode -> featurize -> filter -> batch(32) -> score")
    print(f"on {ezflow.NUM_CPUS} CPUs; first serially, then with ezflow\n")
    t0 = time.perf_counter()
    want = serial(n)
    t_serial = time.perf_counter() - t0
    print(f"serial:  {t_serial:6.2f} s")

    flow = (
        ezflow.Flow(range(n))
        .map(decode)
        .map(featurize)
        .filter(interesting, mode="thread", workers=1)
        .batch(32, timeout=0.1)
        .map(score, mode="thread", workers=1)
        .unbatch()
    )
    t0 = time.perf_counter()
    got = flow.collect(progress=progress)
    t_flow = time.perf_counter() - t0
    if got != want:
        print("ezflow's results differ from the serial run", file=sys.stderr)
        return 1
    print(f"ezflow:  {t_flow:6.2f} s  ->  {t_serial / t_flow:.2f}x faster than serial\n")
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
        return demo(args.n, False if args.no_progress else True)
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
