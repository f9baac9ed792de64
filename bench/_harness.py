"""Timing, output checking, tables and JSON for the side-by-side benchmarks."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# --- registry types ----------------------------------------------------------


@dataclass
class Impl:
    """One implementation: ``fn(inputs) -> outputs``.

    kind: ``"serial"`` (the reference every output is checked against),
    ``"peer"`` (another library; the best of these is "best peer") or
    ``"ezflow"``. ``unavailable()`` returns None, or why the row cannot run.
    """

    name: str
    fn: Callable[[Any], Any]
    kind: str = "peer"
    unavailable: Callable[[], str | None] | None = None
    note: str = ""


def check_equal(expected, got) -> str | None:
    """Default output check: same list, same order. None means correct."""
    if not isinstance(got, list):
        try:
            got = list(got)
        except TypeError:
            return f"returned {type(got).__name__}, not a sequence"
    if got == expected:
        return None
    if len(got) != len(expected):
        return f"{len(got)} results, expected {len(expected)}"
    for i, (a, b) in enumerate(zip(got, expected)):
        if a != b:
            return f"result[{i}] = {a!r:.60}, expected {b!r:.60}"
    return "results differ"  # pragma: no cover


@dataclass
class Workload:
    key: str                      # "W1"
    title: str                    # one line, shown above the table
    make_inputs: Callable[[bool], Any] | None = None   # quick -> inputs
    impls: list | Callable[[Any], list] = field(default_factory=list)
    unit: str = "items"           # "items" or "MiB"
    amount: Callable[[Any], float] = len                  # units per call
    check: Callable[[Any, Any], str | None] = check_equal
    describe: Callable[[Any], str] | None = None       # detail line
    run: Callable[[Context, Workload], Table] | None = None


@dataclass
class Context:
    repeat: int = 3
    quick: bool = False
    budget: float = 20.0      # stop repeating an impl once its runs took this long
    timeout: float = 240.0    # one call longer than this is reported as a timeout
    verbose: bool = True

    def log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)


@dataclass
class Table:
    key: str
    title: str
    detail: str = ""
    columns: list = field(default_factory=list)   # (key, header, formatter)
    rows: list = field(default_factory=list)      # dicts
    notes: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "title": self.title,
            "detail": self.detail,
            "columns": [c[0] for c in self.columns],
            "rows": self.rows,
            "notes": self.notes,
        }


# --- formatting --------------------------------------------------------------


def fmt_seconds(v) -> str:
    if v is None:
        return ""
    if v >= 100:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.3f}"
    if v >= 0.001:
        return f"{v:.4f}"
    return f"{v * 1e6:.0f}us"


def fmt_rate(unit: str) -> Callable[[Any], str]:
    def f(v):
        if v is None:
            return ""
        if unit == "MiB":
            return f"{v:,.0f} MiB/s" if v >= 10 else f"{v:.2f} MiB/s"
        for scale, suffix in ((1e6, " M"), (1e3, " k")):
            if v >= scale:
                return f"{v / scale:.3g}{suffix}/s"
        return f"{v:.3g} /s"

    return f


def fmt_ratio(v) -> str:
    if v is None:
        return ""
    if v >= 10:
        return f"{v:.0f}x"
    if v >= 0.1:
        return f"{v:.2f}x"
    return f"{v:.3f}x"


def fmt_plain(v) -> str:
    return "" if v is None else str(v)


def render(table: Table) -> str:
    """Plain-text table; rows that did not run show their status instead."""
    headers = [c[1] for c in table.columns]
    widths = [len(h) for h in headers]
    cells_by_row = []
    for row in table.rows:
        if row.get("status", "ok") != "ok":
            widths[0] = max(widths[0], len(str(row.get("impl", ""))))
            cells_by_row.append(None)
            continue
        cells = [c[2](row.get(c[0])) for c in table.columns]
        widths = [max(w, len(c)) for w, c in zip(widths, cells)]
        cells_by_row.append(cells)

    def line(cells):
        return "  ".join(c.ljust(widths[i]) if i in (0, len(cells) - 1) else c.rjust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    lines = [f"== {table.key}: {table.title}"]
    if table.detail:
        lines.append(f"   {table.detail}")
    lines.append(line(headers))
    lines.append(line(["-" * w for w in widths]))
    for row, cells in zip(table.rows, cells_by_row):
        if cells is None:
            status = row["status"] + (f": {row['detail']}" if row.get("detail") else "")
            lines.append(f"{str(row.get('impl', '')).ljust(widths[0])}  {status}")
        else:
            lines.append(line(cells))
    for note in table.notes:
        lines.append(f"   note: {note}")
    return "\n".join(lines)


# --- ratios ------------------------------------------------------------------


def add_ratios(rows: list, time_key: str = "seconds") -> None:
    """Fill ``vs_serial`` (t_serial / t) and ``vs_best_peer`` (t_best / t).

    Both are speed ratios: > 1 means this row is faster. "Best peer" is the
    fastest correct row of kind "peer" (not serial, not ezflow).
    """
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get(time_key)]
    serial = next((r[time_key] for r in ok if r["kind"] == "serial"), None)
    peers = [r for r in ok if r["kind"] == "peer"]
    best = min(peers, key=lambda r: r[time_key]) if peers else None
    for r in ok:
        t = r[time_key]
        r["vs_serial"] = serial / t if serial else None
        r["vs_best_peer"] = best[time_key] / t if best else None
    if best is not None:
        for r in rows:
            r["best_peer"] = best["impl"]


# --- timing ------------------------------------------------------------------


class CallTimeout(Exception):
    pass


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise CallTimeout in the main thread after ``seconds``."""
    if not seconds or threading_is_not_main():
        yield
        return

    def handler(signum, frame):
        raise CallTimeout(f"no result after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def threading_is_not_main() -> bool:
    import threading

    return threading.current_thread() is not threading.main_thread()


def descendants() -> dict:
    """pid -> short description of this process's live descendants."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return {}
    out = {}
    try:
        import multiprocessing

        mp_names = {c.pid: c.name for c in multiprocessing.active_children()}
    except Exception:  # pragma: no cover
        mp_names = {}
    try:
        for p in psutil.Process().children(recursive=True):
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                out[p.pid] = describe_process(p, mp_names.get(p.pid))
            except psutil.Error:
                pass
    except psutil.Error:  # pragma: no cover
        pass
    return out


def describe_process(p, mp_name: str | None = None) -> str:
    if mp_name:  # a multiprocessing.Process of ours: its name says more than argv
        return f"multiprocessing process {mp_name.rstrip('-0123456789') or mp_name}"
    try:
        cmd = " ".join(p.cmdline())
    except Exception:
        cmd = ""
    try:
        name = p.name()
    except Exception:
        name = "?"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    if "ezflow segment watcher" in cmd:
        return "ezflow segment watcher (exits when the owner frees its segments or dies)"
    if "loky" in cmd or "--pipe" in cmd:
        return "loky worker"
    return f"{name}: {cmd[-60:]}" if cmd else name


def new_processes_after(before: dict, grace: float = 1.0) -> dict:
    """Descendants that appeared since ``before`` and are still alive after ``grace`` s.

    Resource trackers are left out: multiprocessing starts one per process
    on first need and it lives exactly as long as we do.
    """
    deadline = time.monotonic() + grace
    while True:
        now = {pid: d for pid, d in descendants().items()
               if pid not in before and d != "resource_tracker"}
        if not now or time.monotonic() >= deadline:
            return now
        time.sleep(0.05)


def _idle_share(window: float) -> float | None:
    """The share of the machine's CPU time that was idle over the next `window` seconds (None: no /proc)."""
    def read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, all but guest time

    a = read()
    time.sleep(window)
    b = read()
    if a is None or b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1])


def quiesce(most: float = 3.0, idle: float = 0.9, window: float = 0.1) -> None:
    """Wait (at most `most` seconds) until the CPUs are idle: what the last row left running has settled.

    A row's processes may still be winding down when the next row starts (a
    pool's workers exiting, a manager process); the row after it would pay
    for them. On a machine others use too this gives up after `most`.
    """
    end = time.monotonic() + most
    while time.monotonic() < end:
        share = _idle_share(window)
        if share is None or share >= idle:
            return


def _median(xs):
    return statistics.median(xs) if xs else None


def run_throughput(ctx: Context, wl: Workload) -> Table:
    """Time every implementation on the same inputs; check each output."""
    t_prep = time.perf_counter()
    inputs = wl.make_inputs(ctx.quick)
    impls = wl.impls(inputs) if callable(wl.impls) else list(wl.impls)
    amount = wl.amount(inputs)
    detail = wl.describe(inputs) if wl.describe else ""
    ctx.log(f"[{wl.key}] inputs ready in {time.perf_counter() - t_prep:.2f} s: {detail}")

    ref = next((i for i in impls if i.kind == "serial"), None)
    if ref is None:
        raise ValueError(f"{wl.key}: no kind='serial' implementation to check against")
    impls = [ref] + [i for i in impls if i is not ref]

    state = {}
    for impl in impls:
        reason = impl.unavailable() if impl.unavailable else None
        state[impl.name] = {
            "impl": impl.name, "kind": impl.kind, "note": impl.note,
            "status": "not available" if reason else "ok",
            "detail": reason or "", "times": [], "left_running": None,
        }
    expected = None
    for rep in range(ctx.repeat):
        for impl in impls:
            st = state[impl.name]
            if st["status"] != "ok":
                continue
            if rep > 0 and sum(st["times"]) >= ctx.budget:
                continue  # slow enough that one run says it; keep the run short
            if impl is not ref and expected is None:
                st["status"], st["detail"] = "not checked", "serial reference failed"
                continue
            before = descendants() if rep == 0 else None
            gc.collect()
            quiesce()
            try:
                with alarm(ctx.timeout):
                    t0 = time.perf_counter()
                    out = impl.fn(inputs)
                    dt = time.perf_counter() - t0
            except CallTimeout as e:
                st["status"], st["detail"] = "timeout", str(e)
                ctx.log(f"[{wl.key}] {impl.name}: TIMEOUT")
                continue
            except Exception as e:
                st["status"] = "error"
                st["detail"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
                ctx.log(f"[{wl.key}] {impl.name}: ERROR {st['detail']}")
                continue
            if before is not None:
                left = new_processes_after(before)
                if left:
                    st["left_running"] = sorted(left.values())
            if impl is ref and expected is None:
                expected = out
            else:
                problem = wl.check(expected, out)
                if problem:
                    st["status"], st["detail"] = "WRONG", problem
                    ctx.log(f"[{wl.key}] {impl.name}: WRONG OUTPUT: {problem}")
                    continue
            del out
            st["times"].append(dt)
            ctx.log(f"[{wl.key}] run {rep + 1}/{ctx.repeat} {impl.name}: {dt:.4f} s")

    rows = []
    for impl in impls:
        st = state[impl.name]
        t = _median(st["times"])
        row = dict(st)
        row["n"] = len(st["times"])
        row["seconds"] = t
        row["rate"] = amount / t if t else None
        row["first_run"] = st["times"][0] if st["times"] else None
        if st["left_running"]:
            kept = f"keeps {len(st['left_running'])} process(es) after the call"
            row["note"] = "; ".join(x for x in (st["note"], kept) if x)
        if st["status"] == "ok" and not st["times"]:
            row["status"], row["detail"] = "error", "no successful run"
        rows.append(row)
    add_ratios(rows)
    notes = []
    for r in rows:
        if r.get("left_running"):
            counts = {}
            for d in r["left_running"]:
                counts[d] = counts.get(d, 0) + 1
            what = ", ".join(f"{n} x {d}" for d, n in counts.items())
            notes.append(f"{r['impl']} leaves processes running after the call: {what}")
    unit_rate = "MiB/s" if wl.unit == "MiB" else "items/s"
    return Table(
        key=wl.key, title=wl.title, detail=detail,
        columns=[
            ("impl", "implementation", fmt_plain),
            ("n", "n", fmt_plain),
            ("seconds", "seconds (median)", fmt_seconds),
            ("rate", unit_rate, fmt_rate(wl.unit)),
            ("vs_serial", "vs serial", fmt_ratio),
            ("vs_best_peer", "vs best peer", fmt_ratio),
            ("first_run", "1st run (s)", fmt_seconds),
            ("note", "note", fmt_plain),
        ],
        rows=rows, notes=notes,
    )


def run_workload(ctx: Context, wl: Workload) -> Table:
    if wl.run is not None:
        return wl.run(ctx, wl)
    return run_throughput(ctx, wl)


# --- environment -------------------------------------------------------------


def environment() -> dict:
    import multiprocessing
    import platform
    import subprocess

    env = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "start_method": multiprocessing.get_start_method(allow_none=True) or
        multiprocessing.get_context().get_start_method(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    versions = {}
    for mod in ("joblib", "mpire", "pypeln", "dill", "numpy"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = None
    env["versions"] = versions
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        env["git_head"] = subprocess.run(
            ["git", "-C", root, "log", "-1", "--format=%h %s"],
            capture_output=True, text=True, timeout=10).stdout.strip()
        env["git_dirty"] = bool(subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "ezflow"],
            capture_output=True, text=True, timeout=10).stdout.strip())
    except Exception:
        pass
    return env


def is_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
