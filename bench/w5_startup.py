"""W5: start-up. 10 trivial items, each implementation in a fresh interpreter.

Per implementation and repeat, one ``python -c`` process:

1. ``t0`` is the script's first statement; it imports the library, makes the
   pool (if any) and maps ``double`` over 10 items (the *cold* call), prints
   the results as one JSON line, flushed;
2. calls the same map again in the same process (the *warm* call: a pool the
   library or the caller kept is reused), prints that;
3. shuts its pool down and exits.

Measured from the outside (``time.perf_counter`` around the process, via
``subprocess.Popen``): time to the first-result line, and to process exit.
From the inside: import time, time to first result, cold and warm call.
Ratios are on the outside time to first result (> 1 means faster).
After each process exits, any process it started that is still alive (found
by a marker in its environment) is reported and then ended by pid.

Which ezflow is measured: the fresh interpreters get the bench's parent
folder first on PYTHONPATH, so from a checkout they import the source tree
(its .pyc files are written first, as pip would). Issue 14's cold target is
for a wheel installed in a fresh venv; to measure that, build and install it
and run a copy of bench/ from a folder without an ezflow/ beside it::

    python -m pip wheel --no-deps -w /tmp/whl .
    python -m venv /tmp/venv
    /tmp/venv/bin/pip install /tmp/whl/ezflow-*.whl joblib mpire pypeln
    mkdir -p /tmp/b && cp -r bench /tmp/b/ && cd /tmp/b
    env -u PYTHONDONTWRITEBYTECODE /tmp/venv/bin/python -m bench --only W5

The table's notes name the ezflow that was imported.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ._harness import (
    CallTimeout,
    Context,
    Table,
    Workload,
    add_ratios,
    alarm,
    fmt_plain,
    fmt_ratio,
    fmt_seconds,
    quiesce,
)
from ._peers import ezflow_unavailable

N_ITEMS = 10
MIN_REPEAT = 7  # a fresh interpreter is ~50 ms and noisy: a median of 3 moves by 10%
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER_VAR = "EZFLOW_BENCH_MARKER"
EZFLOW_WARM_TARGET = 5.0


@dataclass
class StartupImpl:
    """One row: code run in a fresh interpreter. ``cold`` sets ``r``, ``warm`` sets ``r2``."""

    name: str
    imports: str
    cold: str
    warm: str
    cleanup: str = ""
    kind: str = "peer"
    note: str = ""
    unavailable: Callable[[], str | None] | None = None


IMPLS = [
    StartupImpl("serial (builtin map)", "", "r = list(map(double, data))",
                "r2 = list(map(double, data))", kind="serial"),
    StartupImpl("multiprocessing.Pool (kept)", "import multiprocessing",
                "pool = multiprocessing.Pool(2)\nr = pool.map(double, data)",
                "r2 = pool.map(double, data)", "pool.close()\npool.join()"),
    StartupImpl("ProcessPoolExecutor (kept)", "from concurrent.futures import ProcessPoolExecutor",
                "ex = ProcessPoolExecutor(2)\nr = list(ex.map(double, data))",
                "r2 = list(ex.map(double, data))", "ex.shutdown(wait=True)",
                note="chunksize=1"),
    StartupImpl("joblib.Parallel(n_jobs=2)", "from joblib import Parallel, delayed",
                "r = Parallel(n_jobs=2)(delayed(double)(x) for x in data)",
                "r2 = Parallel(n_jobs=2)(delayed(double)(x) for x in data)",
                "from joblib.externals.loky import get_reusable_executor\n"
                "get_reusable_executor().shutdown(wait=True)",
                note="loky executor reused"),
    StartupImpl("mpire.WorkerPool(2, keep_alive)", "from mpire import WorkerPool",
                "pool = WorkerPool(n_jobs=2, keep_alive=True)\nr = pool.map(double, data)",
                "r2 = pool.map(double, data)", "pool.stop_and_join()"),
    StartupImpl("pypeln.process.map(workers=2)", "import pypeln as pl",
                "r = list(pl.sync.ordered(pl.process.map(double, data, workers=2)))",
                "r2 = list(pl.sync.ordered(pl.process.map(double, data, workers=2)))",
                note="no pool to reuse"),
    StartupImpl("ezflow.map", "import ezflow",
                "r = ezflow.map(double, data, workers=2, progress=False)",
                "r2 = ezflow.map(double, data, workers=2, progress=False)",
                kind="ezflow", note="progress=False", unavailable=ezflow_unavailable),
]

TEMPLATE = """\
import time
t0 = time.perf_counter()
import json, sys
from bench._work import double
{imports}
t_import = time.perf_counter()
data = list(range({n}))
{cold}
t_first = time.perf_counter()
print(json.dumps({{"import": t_import - t0, "first": t_first - t0,
                  "cold": t_first - t_import, "result": list(r)}}), flush=True)
t1 = time.perf_counter()
{warm}
t2 = time.perf_counter()
print(json.dumps({{"warm": t2 - t1, "result2": list(r2)}}), flush=True)
{cleanup}
print(json.dumps({{"cleanup": time.perf_counter() - t2}}), flush=True)
"""


def script_for(impl: StartupImpl, n: int = N_ITEMS) -> str:
    return TEMPLATE.format(imports=impl.imports, cold=impl.cold, warm=impl.warm,
                           cleanup=impl.cleanup or "pass", n=n)


def marked(marker: str) -> list:
    """Live processes whose environment carries ``marker``."""
    import psutil

    found = []
    needle = f"{MARKER_VAR}={marker}".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            p = psutil.Process(int(d))
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append(p)
        except (OSError, psutil.Error):
            continue
    return found


_PYC: dict = {}


def _ezflow_source() -> str | None:
    """The ezflow package folder next to bench/, or None (measuring an installed ezflow)."""
    path = os.path.join(ROOT, "ezflow")
    return path if os.path.isfile(os.path.join(path, "__init__.py")) else None


def _compile_ezflow() -> None:
    """Write ezflow's .pyc files (ezflow/__pycache__, git-ignored), as ``pip install`` does.

    A source checkout under PYTHONDONTWRITEBYTECODE (set on these machines)
    would otherwise compile every ezflow module on every start (~40 ms),
    while the peers load the .pyc files pip wrote when it installed them.
    """
    if not _PYC:
        import compileall

        src = _ezflow_source()
        _PYC["done"] = compileall.compile_dir(src, quiet=1) if src else True


def run_fresh(impl: StartupImpl, timeout: float) -> dict:
    """Run one fresh interpreter for ``impl``; return its measurements."""
    marker = uuid.uuid4().hex
    _compile_ezflow()
    env = dict(os.environ)
    env[MARKER_VAR] = marker
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONSTARTUP", None)
    lines = []
    with tempfile.TemporaryFile() as err:
        t_start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", script_for(impl)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        try:
            with alarm(timeout):
                first = proc.stdout.readline()
                t_out_first = time.perf_counter()
                rest = proc.stdout.read()
                proc.wait()
                t_out_exit = time.perf_counter()
        except CallTimeout:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started for this run
            proc.wait()
            return {"status": "timeout", "detail": f"no exit after {timeout:g} s"}
        finally:
            proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    lines = [ln for ln in (first + rest).decode(errors="replace").splitlines() if ln.startswith("{")]
    m = {}
    for ln in lines:
        m.update(json.loads(ln))
    if proc.returncode != 0 or "result" not in m:
        last = stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"status": "error", "detail": last[0][:160]}

    # Processes this interpreter started that outlived it.
    leftover = []
    deadline = time.monotonic() + 2.0
    while True:
        alive = marked(marker)
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    for p in alive:
        try:
            leftover.append(" ".join(p.cmdline())[-60:] or p.name())
            p.kill()  # started by this run (it carries our marker); end it by pid
        except Exception:
            pass
    m.update({
        "status": "ok",
        "outside_first": t_out_first - t_start,
        "outside_exit": t_out_exit - t_start,
        "leftover": leftover,
    })
    return m


def run(ctx: Context, wl: Workload) -> Table:
    expected = [x * 2 for x in range(N_ITEMS)]
    state = {}
    for impl in IMPLS:
        reason = impl.unavailable() if impl.unavailable else None
        state[impl.name] = {"impl": impl.name, "kind": impl.kind, "note": impl.note,
                            "status": "not available" if reason else "ok",
                            "detail": reason or "", "samples": [], "leftover": []}
    repeat = max(ctx.repeat, MIN_REPEAT)
    for rep in range(repeat):
        for impl in IMPLS:
            st = state[impl.name]
            if st["status"] != "ok":
                continue
            quiesce()  # the previous interpreter's pool may still be exiting
            m = run_fresh(impl, ctx.timeout)
            if m["status"] != "ok":
                st["status"], st["detail"] = m["status"], m["detail"]
                ctx.log(f"[W5] {impl.name}: {m['status'].upper()} {m['detail']}")
                continue
            for key in ("result", "result2"):
                if m.get(key) != expected:
                    st["status"] = "WRONG"
                    st["detail"] = f"{key} = {m.get(key)!r:.80}, expected {expected!r}"
                    break
            if st["status"] != "ok":
                ctx.log(f"[W5] {impl.name}: WRONG OUTPUT: {st['detail']}")
                continue
            st["leftover"].extend(m["leftover"])
            st["samples"].append(m)
            ctx.log(f"[W5] run {rep + 1}/{repeat} {impl.name}: first result "
                    f"{m['outside_first']:.3f} s (inside {m['first']:.3f}), "
                    f"cold {m['cold']:.4f} s, warm {m['warm']:.4f} s")

    rows = []
    for impl in IMPLS:
        st = state[impl.name]
        row = {k: st[k] for k in ("impl", "kind", "note", "status", "detail", "leftover")}
        samples = st["samples"]
        row["n"] = len(samples)
        for key in ("outside_first", "outside_exit", "import", "first", "cold", "warm", "cleanup"):
            vals = [s[key] for s in samples if key in s]
            row[key] = statistics.median(vals) if vals else None
        row["raw"] = [{k: v for k, v in s.items() if k not in ("result", "result2")}
                      for s in samples]
        if row["cold"] and row["warm"]:
            row["cold_over_warm"] = row["cold"] / row["warm"]
        if st["status"] == "ok" and not samples:
            row["status"], row["detail"] = "error", "no successful run"
        row["seconds"] = row["outside_first"]
        rows.append(row)
    add_ratios(rows, "seconds")

    notes = [_which_ezflow()]
    for r in rows:
        if r["kind"] == "ezflow" and r.get("cold_over_warm"):
            ok = r["cold_over_warm"] >= EZFLOW_WARM_TARGET
            notes.append(f"ezflow warm call is {r['cold_over_warm']:.2f}x faster than the cold one "
                         f"(target >= {EZFLOW_WARM_TARGET:g}x): {'PASS' if ok else 'FAIL'}")
        if r.get("leftover"):
            notes.append(f"{r['impl']}: {len(r['leftover'])} process(es) still alive 2 s after "
                         f"the interpreter exited (killed): {sorted(set(r['leftover']))}")
    return Table(
        key=wl.key, title=wl.title,
        detail=(f"{N_ITEMS} items of x*2, each implementation in a fresh `python -c`; "
                "'first result' is measured outside (process spawn to first result line); "
                "ratios on that column (> 1 = faster)"),
        columns=[
            ("impl", "implementation", fmt_plain),
            ("n", "n", fmt_plain),
            ("outside_first", "first result (s)", fmt_seconds),
            ("vs_serial", "vs serial", fmt_ratio),
            ("vs_best_peer", "vs best peer", fmt_ratio),
            ("import", "import", fmt_seconds),
            ("first", "inside: 1st result", fmt_seconds),
            ("cold", "cold call", fmt_seconds),
            ("warm", "warm call", fmt_seconds),
            ("cold_over_warm", "cold/warm", fmt_ratio),
            ("outside_exit", "process exit", fmt_seconds),
            ("note", "note", fmt_plain),
        ],
        rows=rows, notes=notes,
    )


def _which_ezflow() -> str:
    """Where the fresh interpreters import ezflow from (they see sys.path as this process does)."""
    try:
        import ezflow
    except Exception as e:
        return f"ezflow: not importable ({type(e).__name__})"
    where = os.path.dirname(os.path.abspath(ezflow.__file__))
    kind = "the source tree" if where == _ezflow_source() else "an installed package"
    return f"ezflow imported from {where} ({kind})"


WORKLOAD = Workload(key="W5", title="start-up: 10 trivial items in a fresh interpreter, workers=2",
                    run=run)

# For a quick look at one script: python -m bench.w5_startup
if __name__ == "__main__":  # pragma: no cover
    print(textwrap.indent(script_for(IMPLS[1]), "    "))
