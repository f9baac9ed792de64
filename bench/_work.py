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
    return calibrate_step(cpu_work, target_s, seed=1, probes=probes)


# --- W6: three different pipeline steps of ~0.2 ms each --------------------
# Deterministic pure-Python loops on ints, each a different kind of work, so
# a pipeline cannot be mistaken for one function run three times. Bind
# ``n_iter`` with functools.partial (picklable by reference).

def step_lcg(x, n_iter):
    """W6 step 1: an LCG seeded by the item."""
    acc = x & 0x7FFFFFFF
    for _ in range(n_iter):
        acc = (acc * 1103515245 + 12345) & 0x7FFFFFFF
    return acc


def step_xorshift(x, n_iter):
    """W6 step 2: 32-bit xorshift rounds."""
    x = (x & 0xFFFFFFFF) or 1
    for _ in range(n_iter):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
    return x


def step_modsum(x, n_iter):
    """W6 step 3: a modular weighted sum."""
    s = 0
    for i in range(n_iter):
        s = (s + (x ^ i) * (i | 1)) % 1000003
    return s


def compose_steps(x, steps):
    """W6 fused reference: apply ``steps`` in order to one item."""
    for f in steps:
        x = f(x)
    return x


def calibrate_step(fn, target_s: float, seed: int = 12345, probes: int = 9) -> int:
    """Return the ``n_iter`` that makes ``fn(seed, n_iter)`` take about ``target_s`` here.

    Pass a ``seed`` like the items the step really gets: an int above 2**30
    takes a slower path in CPython's arithmetic (step_modsum: ~25% slower).
    """
    n = 1_000
    while True:  # grow until one probe takes >= 2 ms
        t = time.perf_counter()
        fn(seed, n)
        dt = time.perf_counter() - t
        if dt >= 0.002:
            break
        n *= 2
    samples = []
    for _ in range(probes):
        t = time.perf_counter()
        fn(seed, n)
        samples.append(time.perf_counter() - t)
    samples.sort()
    per_iter = samples[len(samples) // 2] / n
    return max(1, round(target_s / per_iter))


def step_wait(x, seconds):
    """W10 middle step: waits as a download or a disk read would (no CPU), then passes the item on."""
    time.sleep(seconds)
    return x
