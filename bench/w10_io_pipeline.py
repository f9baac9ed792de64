"""W10: a W6-style pipeline whose middle stage waits on I/O: the case the CPU budget grows workers for.

Three process stages over 4,000 items: ``step_lcg`` (~0.2 ms CPU), then
``step_wait`` (sleeps 1 ms: a download, a disk read), then ``step_modsum``
(~0.2 ms CPU). With one worker per CPU per stage the waiting stage caps the
flow at (CPUs / 1 ms) items/s; the CPU work alone allows about
CPUs / 0.4 ms. Rows, every output checked against serial:

- serial: the three composed, one item at a time;
- ``multiprocessing.Pool(2)``: chained ``imap``, chunksize 16;
- ezflow ``Flow(xs).map(f1).map(wait).map(f3)`` with default workers: the
  three run fused (one chain in the same workers, ``ezflow/_plan/chain.py``)
  and the CPU budget starts the chain at one worker per CPU and gives it
  more (up to 4 per CPU) while its workers sleep inside items;
- the same with fusing off: the budget gives the waiting stage alone more;
- the same with ``workers=NUM_CPUS`` on each stage: the static split, no budget.

The note under the table gives the budget row's speed over the static one
(same run) and the most workers the waiting stage ran.
"""

from __future__ import annotations

import functools
import multiprocessing

from ._harness import Impl, Workload, run_throughput
from ._peers import WORKERS, ezflow_unavailable
from ._work import calibrate_step, step_lcg, step_modsum, step_wait
from .w6_pipeline import PipeInput

N_FULL = 4_000
N_QUICK = 800
STEP_S = 0.0002
WAIT_S = 0.001
IMAP_CHUNKSIZE = 16

_calibrated: dict = {}
_peaks: list = []  # most workers the waiting stage ran, per budget run
_separate_peaks: list = []  # ... with each stage in its own workers


def make_inputs(quick: bool) -> PipeInput:
    if not _calibrated:  # once per process, same work for everyone
        seed = N_FULL // 2
        for fn in (step_lcg, step_modsum):
            _calibrated[fn.__name__] = calibrate_step(fn, STEP_S, seed)
    steps = (functools.partial(step_lcg, n_iter=_calibrated["step_lcg"]),
             functools.partial(step_wait, seconds=WAIT_S),
             functools.partial(step_modsum, n_iter=_calibrated["step_modsum"]))
    return PipeInput(steps, list(range(N_QUICK if quick else N_FULL)))


def describe(inp: PipeInput) -> str:
    return (f"{len(inp.items):,} items: ~{STEP_S * 1e3:g} ms CPU, then a {WAIT_S * 1e3:g} ms sleep, "
            f"then ~{STEP_S * 1e3:g} ms CPU; one worker per CPU on the sleeping stage caps it at "
            f"{WORKERS / WAIT_S:,.0f} items/s")


def serial(inp: PipeInput):
    f1, f2, f3 = inp.steps
    return [f3(f2(f1(x))) for x in inp.items]


def pool_imap_chain(inp: PipeInput):
    f1, f2, f3 = inp.steps
    c = IMAP_CHUNKSIZE
    with multiprocessing.Pool(WORKERS) as pool:
        out = list(pool.imap(f3, pool.imap(f2, pool.imap(f1, inp.items, c), c), c))
        pool.close()
        pool.join()
    return out


class _Peak:
    """An observer that keeps the most workers the waiting stage ran."""

    def __init__(self) -> None:
        self.most = 0

    def _see(self, stats) -> None:
        self.most = max(self.most, stats.stages[1].workers)

    open = update = close = _see


def _flow(inp: PipeInput, **opts):
    import ezflow

    f1, f2, f3 = inp.steps
    return (ezflow.Flow(inp.items)
            .map(f1, name="cpu1", **opts)
            .map(f2, name="wait", **opts)
            .map(f3, name="cpu2", **opts))


def ezflow_budget(inp: PipeInput):
    peak = _Peak()
    out = _flow(inp).collect(progress=peak)
    _peaks.append(peak.most)
    return out


def ezflow_static(inp: PipeInput):
    return _flow(inp, workers=WORKERS).collect(progress=False)


def ezflow_separate(inp: PipeInput):
    from .w6_pipeline import separate_stages

    peak = _Peak()
    with separate_stages():
        out = _flow(inp).collect(progress=peak)
    _separate_peaks.append(peak.most)
    return out


ROW_BUDGET = "ezflow Flow 3 stages (CPU budget)"
ROW_STATIC = "ezflow Flow 3 stages, workers=2 each"
ROW_SEPARATE = "ezflow Flow 3 stages, not fused (CPU budget)"


def impls(inp: PipeInput) -> list:
    _peaks.clear()
    _separate_peaks.clear()
    return [
        Impl("serial (f3(wait(f1(x))))", serial, kind="serial"),
        Impl(f"Pool(2) chained imap chunksize={IMAP_CHUNKSIZE}", pool_imap_chain),
        Impl(ROW_BUDGET, ezflow_budget, kind="ezflow", unavailable=ezflow_unavailable,
             note="default workers"),
        Impl(ROW_STATIC, ezflow_static, kind="ezflow", unavailable=ezflow_unavailable,
             note="static split, no budget"),
        Impl(ROW_SEPARATE, ezflow_separate, kind="ezflow", unavailable=ezflow_unavailable,
             note="default workers, each stage its own: how it ran before fusing"),
    ]


def run(ctx, wl):
    table = run_throughput(ctx, wl)
    rows = {r["impl"]: r for r in table.rows}
    budget, static = rows.get(ROW_BUDGET, {}), rows.get(ROW_STATIC, {})
    if budget.get("rate") and static.get("rate"):
        table.notes.append(f"CPU budget vs static split (workers=2 each), same run: "
                           f"{budget['rate'] / static['rate']:.2f}x the items/s; the waiting stage "
                           f"ran at most {max(_peaks, default=0)} workers (the three run fused: "
                           f"one chain, sized as one stage)")
    separate = rows.get(ROW_SEPARATE, {})
    if budget.get("rate") and separate.get("rate"):
        table.notes.append(f"fused vs each stage in its own workers (both with the budget), same run: "
                           f"{budget['rate'] / separate['rate']:.2f}x the items/s; the waiting stage "
                           f"alone ran at most {max(_separate_peaks, default=0)} workers")
    return table


WORKLOAD = Workload(
    key="W10",
    title="3-stage pipeline whose middle stage sleeps 1 ms per item (I/O), 2 workers per peer stage",
    make_inputs=make_inputs,
    impls=impls,
    unit="items",
    amount=len,
    describe=describe,
    run=run,
)
