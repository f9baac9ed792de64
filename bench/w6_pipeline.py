"""W6: multi-stage pipelines. 3 steps of ~0.2 ms pure-Python CPU over 20,000 items.

The three steps (``step_lcg``, ``step_xorshift``, ``step_modsum`` in
``bench/_work.py``) are calibrated once at start so each takes ~0.2 ms here.
Rows, every output checked against serial:

- serial: the three composed, one item at a time;
- ezflow ``Flow(xs).map(f1).map(f2).map(f3).collect(progress=False)``
  (process stages, default workers: the CPU budget starts them at one worker
  per CPU each and keeps that for CPU-bound stages; W10 is the case where it
  adds workers);
  The three are plain process maps with default options: they run fused,
  one chain in the same 2 workers (``ezflow/_plan/chain.py``);
- the same with ``workers=2`` on each stage: the static split, no budget,
  each stage its own workers;
- the same with default workers and fusing off: each stage its own workers,
  the CPU budget sharing them (how such a flow ran before chains);
- the same with a progress view forced on although stdout is not a tty: a
  real ``TqdmObserver`` writing to /dev/null, and the notebook panel
  (``WidgetObserver``) built headless (no kernel: ipywidgets uses a dummy
  comm, IPython's ``display`` prints the bundle to stdout, which we send to
  /dev/null; every ``update`` still renders the HTML table);
- pypeln: 3 chained ``pl.process.map(f, stage, workers=2)`` + ``sync.ordered``;
- mpire: one ``WorkerPool(n_jobs=2)``, ``map`` per step, all items per step;
- ``multiprocessing.Pool(2)``: chained ``imap`` with chunksize=64;
- ``ezflow.map(compose)``: the three steps fused in one stage (reference).

Notes under the table: each progress row's items/s as a ratio of progress
off (target: >= 0.95), and the per-stage figures (``flow.stats``) of the
last ezflow run, progress off.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import resource
import statistics
from dataclasses import dataclass

from ._harness import Impl, Workload, fmt_ratio, fmt_seconds, run_throughput
from ._peers import WORKERS, ezflow_unavailable
from ._work import calibrate_step, compose_steps, step_lcg, step_modsum, step_xorshift

N_FULL = 20_000
N_QUICK = 2_000
STEP_S = 0.0002
IMAP_CHUNKSIZE = 64

_calibrated: dict = {}
_last: dict = {}  # figures of the latest ezflow runs, for the notes
_cpu: dict = {}  # impl name -> CPU seconds of each call (this process + its workers)


@dataclass(frozen=True)
class PipeInput:
    steps: tuple  # three picklable callables (partials of module functions)
    items: list

    def __len__(self) -> int:
        return len(self.items)


def make_inputs(quick: bool) -> PipeInput:
    if not _calibrated:  # once per process, same work for everyone
        seed = N_FULL // 2  # each step is timed on an input like the ones it gets
        for fn in (step_lcg, step_xorshift, step_modsum):
            n_iter = _calibrated[fn.__name__] = calibrate_step(fn, STEP_S, seed)
            seed = fn(seed, n_iter)
    steps = tuple(functools.partial(fn, n_iter=_calibrated[fn.__name__])
                  for fn in (step_lcg, step_xorshift, step_modsum))
    return PipeInput(steps, list(range(N_QUICK if quick else N_FULL)))


def describe(inp: PipeInput) -> str:
    steps = ", ".join(f"{s.func.__name__}(n_iter={s.keywords['n_iter']:,})" for s in inp.steps)
    return (f"{len(inp.items):,} items through 3 steps of ~{STEP_S * 1e3:g} ms each "
            f"(calibrated here: {steps}); 2 cores: the limit is 2.0x serial")


# --- implementations -------------------------------------------------------

def serial(inp: PipeInput):
    f1, f2, f3 = inp.steps
    return [f3(f2(f1(x))) for x in inp.items]


def _ezflow_flow(inp: PipeInput, **opts):
    import ezflow

    f1, f2, f3 = inp.steps
    # names only label flow.stats (a partial would be 'partial', 'partial_2', ...)
    return (ezflow.Flow(inp.items)
            .map(f1, name=f1.func.__name__, **opts)
            .map(f2, name=f2.func.__name__, **opts)
            .map(f3, name=f3.func.__name__, **opts))


def ezflow_flow_fixed(inp: PipeInput):
    """One worker per CPU per stage, as default workers ran before the CPU budget."""
    return _ezflow_flow(inp, workers=WORKERS).collect(progress=False)


def ezflow_flow(inp: PipeInput):
    flow = _ezflow_flow(inp)
    out = flow.collect(progress=False)
    _last["off"] = flow.stats
    return out


@contextlib.contextmanager
def separate_stages():
    """Each stage in its own workers, as before consecutive process maps ran fused (the reference row)."""
    from ezflow._plan import chain

    was, chain.FUSE = chain.FUSE, False
    try:
        yield
    finally:
        chain.FUSE = was


def ezflow_flow_separate(inp: PipeInput):
    with separate_stages():
        return _ezflow_flow(inp).collect(progress=False)


def ezflow_flow_tqdm(inp: PipeInput):
    from ezflow._views.bars import TqdmObserver

    flow = _ezflow_flow(inp)
    with open(os.devnull, "w") as sink:
        obs = TqdmObserver(file=sink)
        out = flow.collect(progress=obs)
    if len(obs.bars) != 3:  # the view really ran
        raise RuntimeError(f"the tqdm view opened {len(obs.bars)} bars, expected 3")
    return out


def widget_unavailable():
    why = ezflow_unavailable()
    if why:
        return why
    try:
        from ezflow._views.panel import WidgetObserver  # noqa: F401
    except Exception as e:
        return f"WidgetObserver cannot be imported: {type(e).__name__}: {e}"
    return None


def ezflow_flow_widget(inp: PipeInput):
    from ezflow._views.panel import WidgetObserver

    flow = _ezflow_flow(inp)
    obs = WidgetObserver()
    # No kernel: IPython's display() prints the bundle; keep it off our stdout.
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        out = flow.collect(progress=obs)
    if obs.widget is None or 'data-state="done"' not in obs.widget.value:
        raise RuntimeError("the widget view did not render the finished run")
    return out


def ezflow_fused(inp: PipeInput):
    import ezflow

    fused = functools.partial(compose_steps, steps=inp.steps)
    return ezflow.map(fused, inp.items, progress=False)


def pypeln_chain(inp: PipeInput):
    import pypeln as pl

    f1, f2, f3 = inp.steps
    stage = pl.process.map(f1, inp.items, workers=WORKERS)
    stage = pl.process.map(f2, stage, workers=WORKERS)
    stage = pl.process.map(f3, stage, workers=WORKERS)
    # as the W1/W2 pypeln peer: completion order, restored here by sync.ordered
    return list(pl.sync.ordered(stage))


def mpire_chain(inp: PipeInput):
    from mpire import WorkerPool

    f1, f2, f3 = inp.steps
    # mpire unpacks tuple items into arguments; ours are ints all the way
    with WorkerPool(n_jobs=WORKERS) as pool:
        a = pool.map(f1, inp.items)
        b = pool.map(f2, a)
        return pool.map(f3, b)


def pool_imap_chain(inp: PipeInput):
    f1, f2, f3 = inp.steps
    c = IMAP_CHUNKSIZE
    with multiprocessing.Pool(WORKERS) as pool:
        out = list(pool.imap(f3, pool.imap(f2, pool.imap(f1, inp.items, c), c), c))
        pool.close()
        pool.join()
    return out


# --- CPU seconds per call: the figure a busy machine does not distort much --

def _proc_cpu() -> dict:
    """pid -> CPU seconds of each live descendant process."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return {}
    out = {}
    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:  # pragma: no cover
        return {}
    for p in kids:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _rusage() -> float:
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def cpu_counted(name: str, fn):
    """Wrap ``fn`` to record the CPU seconds its call used, workers included.

    This process and reaped children come from getrusage; workers still
    alive after the call (warm pools, pypeln's manager) from psutil, as the
    difference over the call. Other processes on the machine are not
    counted, so on a busy machine this is the steadier figure: wall time
    there depends on how much of the cores an implementation's processes win.
    """
    @functools.wraps(fn)
    def wrapper(inp):
        live0 = _proc_cpu()
        r0 = _rusage()
        out = fn(inp)
        r1 = _rusage()
        live1 = _proc_cpu()
        cpu = r1 - r0
        for pid, c in live1.items():
            cpu += c - live0.get(pid, 0.0)
        for pid, c in live0.items():
            if pid not in live1:
                cpu -= c  # reaped during the call: getrusage counted its whole life
        _cpu.setdefault(name, []).append(cpu)
        return out

    return wrapper


ROW_OFF = "ezflow Flow 3 stages"
ROW_FIXED = "ezflow Flow 3 stages, workers=2 each"
ROW_SEPARATE = "ezflow Flow 3 stages, not fused"
ROW_TQDM = "ezflow Flow 3 stages, tqdm view"
ROW_WIDGET = "ezflow Flow 3 stages, widget view"


def impls(inp: PipeInput) -> list:
    _cpu.clear()
    rows = [
        Impl("serial (f3(f2(f1(x))))", serial, kind="serial"),
        Impl("pypeln 3 x process.map(workers=2)", pypeln_chain, note="+ sync.ordered"),
        Impl("mpire WorkerPool(2): 3 maps in turn", mpire_chain),
        Impl(f"Pool(2) chained imap chunksize={IMAP_CHUNKSIZE}", pool_imap_chain),
        Impl(ROW_OFF, ezflow_flow, kind="ezflow", unavailable=ezflow_unavailable,
             note="process stages, default workers, progress=False"),
        Impl(ROW_FIXED, ezflow_flow_fixed, kind="ezflow", unavailable=ezflow_unavailable,
             note="workers=2 per stage: the static split, no CPU budget"),
        Impl(ROW_SEPARATE, ezflow_flow_separate, kind="ezflow", unavailable=ezflow_unavailable,
             note="default workers, each stage its own (2 each): how flows ran before fusing"),
        Impl(ROW_TQDM, ezflow_flow_tqdm, kind="ezflow", unavailable=ezflow_unavailable,
             note="TqdmObserver(file=/dev/null)"),
        Impl(ROW_WIDGET, ezflow_flow_widget, kind="ezflow", unavailable=widget_unavailable,
             note="WidgetObserver, headless"),
        Impl("ezflow.map(compose) fused", ezflow_fused, kind="ezflow",
             unavailable=ezflow_unavailable, note="reference: 1 stage doing all 3 steps"),
    ]
    for impl in rows:
        impl.fn = cpu_counted(impl.name, impl.fn)
    return rows


# --- the table, plus progress-overhead and per-stage notes -----------------

def run(ctx, wl):
    table = run_throughput(ctx, wl)
    serial_cpu = None
    for r in table.rows:
        # the harness keeps only correct runs' times; the CPU list may hold one more
        # (a wrong-output run), so take the median of the last n
        cpus = _cpu.get(r["impl"], [])[-r["n"]:] if r.get("n") else []
        r["cpu"] = statistics.median(cpus) if cpus else None
        if r["kind"] == "serial":
            serial_cpu = r["cpu"]
    for r in table.rows:
        r["cpu_eff"] = serial_cpu / r["cpu"] if serial_cpu and r.get("cpu") else None
    at = [c[0] for c in table.columns].index("first_run")
    table.columns[at:at] = [("cpu", "CPU s", fmt_seconds), ("cpu_eff", "CPU eff", fmt_ratio)]
    table.notes.append("CPU s: median CPU seconds of one call, this process + every worker "
                       "(not other processes on the machine); CPU eff = serial's CPU s / this "
                       "row's: the share of the CPU spent on the work itself")
    if os.getloadavg()[0] > 1.0:
        table.notes.append("on a busy machine wall times favour implementations with more "
                           "processes (they win a larger share of the 2 cores): ezflow runs 6 "
                           "(its CPU budget keeps one worker per CPU per stage here), pypeln 6 + "
                           "a manager, Pool and mpire 2")
    rows = {r["impl"]: r for r in table.rows}
    off = rows.get(ROW_OFF, {})
    for name in (ROW_TQDM, ROW_WIDGET):
        on = rows.get(name, {})
        if off.get("rate") and on.get("rate"):
            ratio = on["rate"] / off["rate"]
            verdict = "within 5%" if ratio >= 0.95 else "MORE than 5% slower"
            cpu = ""
            if off.get("cpu") and on.get("cpu"):
                cpu = f"; CPU s {on['cpu']:.2f} vs {off['cpu']:.2f} ({on['cpu'] / off['cpu'] - 1:+.1%})"
            table.notes.append(f"progress overhead: '{name}' runs at {ratio:.3f}x the items/s "
                               f"of progress off ({verdict}; medians{cpu})")
    stats = _last.get("off")
    if stats is not None:
        per = "; ".join(f"{s.name} {s.workers} worker(s){' (budget)' if s.auto_workers else ''}, "
                        f"busy {s.busy:.0%} ({s.busy_seconds:.2f} s in pieces, "
                        f"{s.throughput:,.0f} items/s)" for s in stats.stages)
        table.notes.append(f"flow.stats of the last ezflow run (progress off), {stats.elapsed:.2f} s: "
                           f"{per}. busy is wall time inside pieces, so with more workers than "
                           f"cores it includes time spent waiting for a CPU")
    return table


WORKLOAD = Workload(
    key="W6",
    title="3-stage pipeline, ~0.2 ms pure-Python CPU per step, 2 workers per peer stage",
    make_inputs=make_inputs,
    impls=impls,
    unit="items",
    amount=len,
    describe=describe,
    run=run,
)
