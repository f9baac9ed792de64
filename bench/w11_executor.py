"""W11: `ezflow.Executor` against the standard library's executors, call by call.

Two patterns of trivial calls (``x*2``), workers=2:

- submit-all-then-results: 2,000 ``ex.submit(double, i)``, then every
  ``future.result()`` (``--quick``: 500);
- map: ``list(ex.map(double, range(N)))`` over 20,000 items (``--quick``: 5,000).

Each pattern runs for processes (``ezflow.Executor()`` vs
``ProcessPoolExecutor``) and for threads (``Executor(mode="thread")`` vs
``ThreadPoolExecutor``). Every executor is made once per bench process and
warmed, so the rows compare the per-call path, not start-up (W5 measures
that); the harness alternates the rows run by run, so a busy machine
weighs on every row alike. Each group's "vs best peer" is against its own
reference. Outputs are checked against a serial loop.
"""

from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass

from ._harness import Impl, Table, Workload, add_ratios, run_throughput
from ._peers import WORKERS, ezflow_unavailable
from ._work import double

SUBMITS_FULL, SUBMITS_QUICK = 2_000, 500
MAP_FULL, MAP_QUICK = 20_000, 5_000

_executors: dict[str, cf.Executor] = {}


def _executor(kind: str) -> cf.Executor:
    """The bench process's executor of this kind, made (and warmed) on first use."""
    ex = _executors.get(kind)
    if ex is None:
        if kind == "ProcessPoolExecutor":
            ex = cf.ProcessPoolExecutor(WORKERS)
        elif kind == "ThreadPoolExecutor":
            ex = cf.ThreadPoolExecutor(WORKERS)
        else:
            import ezflow

            ex = ezflow.Executor(WORKERS, mode="thread" if kind.endswith("thread") else "process")
        list(ex.map(double, range(4 * WORKERS)))  # every worker up
        _executors[kind] = ex
    return ex


def _shutdown() -> None:
    for ex in _executors.values():
        ex.shutdown(wait=True)
    _executors.clear()


@dataclass(frozen=True)
class CallsInput:
    pattern: str  # "submit" or "map"
    n: int

    def __len__(self) -> int:
        return self.n


def _run(kind: str, inp: CallsInput) -> list:
    ex = _executor(kind)
    if inp.pattern == "map":
        return list(ex.map(double, range(inp.n)))
    futures = [ex.submit(double, i) for i in range(inp.n)]
    return [f.result() for f in futures]


def _serial(inp: CallsInput) -> list:
    return [double(i) for i in range(inp.n)]


def _impls(reference: str, ours: str, label: str) -> list:
    return [
        Impl("serial", _serial, kind="serial"),
        Impl(reference, lambda inp: _run(reference, inp)),
        Impl(label, lambda inp: _run(ours, inp), kind="ezflow", unavailable=ezflow_unavailable),
    ]


GROUPS = [  # (pattern, reference, ezflow executor kind, row label)
    ("submit", "ProcessPoolExecutor", "ezflow-process", "ezflow.Executor()"),
    ("map", "ProcessPoolExecutor", "ezflow-process", "ezflow.Executor()"),
    ("submit", "ThreadPoolExecutor", "ezflow-thread", 'ezflow.Executor(mode="thread")'),
    ("map", "ThreadPoolExecutor", "ezflow-thread", 'ezflow.Executor(mode="thread")'),
]


def run(ctx, wl: Workload) -> Table:
    rows: list = []
    notes: list = []
    try:
        _groups(ctx, rows, notes)
    finally:
        _shutdown()
    return Table(key=wl.key, title=wl.title, detail="executors made once and warmed; per-call path",
                 columns=_COLUMNS, rows=rows, notes=notes)


_COLUMNS: list = []


def _groups(ctx, rows: list, notes: list) -> None:
    for pattern, reference, ours, label in GROUPS:
        full, quick = (SUBMITS_FULL, SUBMITS_QUICK) if pattern == "submit" else (MAP_FULL, MAP_QUICK)
        what = f"{full:,} submits + results" if pattern == "submit" else f"map over {full:,} items"
        if ctx.quick:
            what = what.replace(f"{full:,}", f"{quick:,}")
        sub = Workload(
            key=f"W11 {pattern} {reference}",
            title=what,
            make_inputs=lambda q, p=pattern, f=full, k=quick: CallsInput(p, k if q else f),
            impls=_impls(reference, ours, label),
            unit="items",
            amount=len,
        )
        table = run_throughput(ctx, sub)
        group = [r for r in table.rows if r["kind"] != "serial"]
        for r in group:
            r["impl"] = f"{what}: {r['impl']}"
        add_ratios(group)  # within the group: ezflow against its own reference
        rows += group
        notes += [n for n in table.notes if "leaves processes running" not in n]  # kept on purpose
        _COLUMNS[:] = [c for c in table.columns if c[0] != "vs_serial"]


WORKLOAD = Workload(
    key="W11",
    title="ezflow.Executor vs ProcessPoolExecutor / ThreadPoolExecutor: trivial calls, workers=2",
    run=run,
)
