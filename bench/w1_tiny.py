"""W1: many tiny items. Measures per-item overhead: 200,000 x ``x*2``."""

from __future__ import annotations

from ._harness import Workload
from ._peers import MapInput, map_impls
from ._work import double

N_FULL = 200_000
N_QUICK = 20_000


def make_inputs(quick: bool) -> MapInput:
    return MapInput(double, list(range(N_QUICK if quick else N_FULL)))


WORKLOAD = Workload(
    key="W1",
    title="tiny items: x*2 over ints, workers=2",
    make_inputs=make_inputs,
    impls=lambda inp: map_impls(len(inp.items)),
    unit="items",
    amount=len,
    describe=lambda inp: f"{len(inp.items):,} items",
)
