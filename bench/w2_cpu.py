"""W2: CPU-bound items. 400 items of ~5 ms pure-Python work; the limit on
2 cores is 2.0x serial (two forked processes that never talk reach ~1.9x)."""

from __future__ import annotations

import functools

from ._harness import Workload
from ._peers import MapInput, map_impls
from ._work import calibrate_cpu_work, cpu_work

N_FULL = 400
N_QUICK = 80
TARGET_S = 0.005

_calibrated = {}


def make_inputs(quick: bool) -> MapInput:
    if "n_iter" not in _calibrated:  # once per run, same work for everyone
        _calibrated["n_iter"] = calibrate_cpu_work(TARGET_S)
    fn = functools.partial(cpu_work, n_iter=_calibrated["n_iter"])
    return MapInput(fn, list(range(N_QUICK if quick else N_FULL)))


def describe(inp: MapInput) -> str:
    n_iter = inp.fn.keywords["n_iter"]
    return (f"{len(inp.items):,} items of cpu_work(seed, n_iter={n_iter:,}) "
            f"(calibrated to ~{TARGET_S * 1e3:g} ms each here); "
            f"'vs serial' is the speedup, limit 2.0x on 2 cores")


WORKLOAD = Workload(
    key="W2",
    title="CPU-bound items, ~5 ms each, workers=2",
    make_inputs=make_inputs,
    impls=lambda inp: map_impls(len(inp.items)),
    unit="items",
    amount=len,
    describe=describe,
)
