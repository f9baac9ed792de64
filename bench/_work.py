"""Work functions shared by every implementation.

They live in an importable module (not ``__main__``) so that pickling peers
(multiprocessing, ProcessPoolExecutor, pypeln, mpire without dill) can send
them to their workers by reference. Keep this module free of heavy imports:
the start-up workload (W5) imports it in fresh interpreters.
"""

from __future__ import annotations

import time


def double(x):
    """W1/W5: the tiniest useful work."""
    return x * 2


def cpu_work(seed, n_iter):
    """W2: pure-Python CPU work, ``n_iter`` steps of an LCG; deterministic."""
    acc = seed
    for _ in range(n_iter):
        acc = (acc * 1103515245 + 12345) & 0x7FFFFFFF
    return acc


def calibrate_cpu_work(target_s: float = 0.005, probes: int = 7) -> int:
    """Return the ``n_iter`` that makes ``cpu_work`` take about ``target_s`` here.

    Median of several probes, so a busy neighbour on the machine does not
    skew it much.
    """
    n = 20_000
    # Grow until one probe takes >= 2 ms, so timer resolution does not matter.
    while True:
        t = time.perf_counter()
        cpu_work(1, n)
        dt = time.perf_counter() - t
        if dt >= 0.002:
            break
        n *= 2
    samples = []
    for _ in range(probes):
        t = time.perf_counter()
        cpu_work(1, n)
        samples.append(time.perf_counter() - t)
    samples.sort()
    per_iter = samples[len(samples) // 2] / n
    return max(1, round(target_s / per_iter))
