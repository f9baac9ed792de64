"""python -m bench [--only W1,W2] [--quick] [--repeat N] | python -m bench --workers 1,2,4

Runs ezflow and its peers side by side on the same inputs and prints one
table per workload; writes the same numbers to bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import re
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # import ezflow from this checkout, wherever we run from
    sys.path.insert(0, ROOT)

from bench._harness import Context, descendants, environment, render, run_workload  # noqa: E402
from bench._peers import ezflow_unavailable, shutdown_library_pools  # noqa: E402


def discover() -> dict:
    """key ("W1") -> module name, for every bench/w<N>_*.py."""
    found = {}
    for info in pkgutil.iter_modules([HERE]):
        m = re.fullmatch(r"w(\d+)_\w+", info.name)
        if m:
            found[f"W{int(m.group(1))}"] = f"bench.{info.name}"
    return dict(sorted(found.items(), key=lambda kv: int(kv[0][1:])))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W5")
    p.add_argument("--quick", action="store_true",
                   help="smaller inputs and 1 repeat: a smoke run under a minute")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per implementation, median reported (default 3; --quick: 1)")
    p.add_argument("--budget", type=float, default=None,
                   help="stop repeating an implementation once its runs took this many "
                        "seconds in total (default 20; --quick: 5)")
    p.add_argument("--timeout", type=float, default=240.0,
                   help="seconds before one call is abandoned as a timeout (default 240)")
    p.add_argument("--list", action="store_true", help="list workloads and exit")
    p.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--workers", default="",
                   help="comma-separated worker counts, e.g. 1,2,4,8: print the scaling curve "
                        "(ezflow and Pool.map) and the parent's cost per message, item and MiB, then exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.workers:
        from bench.scaling import main as scaling

        counts = [int(w) for w in args.workers.split(",") if w.strip()]
        if not counts or min(counts) < 1:
            print("--workers takes positive counts, e.g. --workers 1,2,4", file=sys.stderr)
            return 2
        return scaling(counts, repeat=args.repeat or 3)
    workloads = discover()
    if args.list:
        for key, mod in workloads.items():
            print(f"{key}: {importlib.import_module(mod).WORKLOAD.title}")
        return 0
    wanted = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(workloads)
    unknown = [w for w in wanted if w not in workloads]
    if unknown:
        print(f"unknown workload(s) {unknown}; have {list(workloads)}", file=sys.stderr)
        return 2
    ctx = Context(
        repeat=args.repeat or (1 if args.quick else 3),
        quick=args.quick,
        budget=args.budget if args.budget is not None else (5.0 if args.quick else 20.0),
        timeout=args.timeout,
        verbose=not args.quiet,
    )
    t_run = time.perf_counter()
    env = environment()
    ez = ezflow_unavailable()
    env["ezflow"] = "available" if ez is None else f"not available ({ez})"
    started = time.strftime("%Y%m%d-%H%M%S")
    print(f"bench: python {env['python']}, {env['cpus']} cpus, start method "
          f"{env['start_method']}, load avg {', '.join(f'{x:.2f}' for x in env['loadavg'])}; "
          f"repeat={ctx.repeat} (median), quick={ctx.quick}; ezflow: {env['ezflow']}")
    print(f"       git: {env.get('git_head', '?')}{' (ezflow/ has uncommitted changes)' if env.get('git_dirty') else ''}")
    print("       ratios are speed ratios: 'vs serial' = t_serial / t, 'vs best peer' = "
          "t_best_peer / t (best peer = fastest correct non-serial, non-ezflow row); "
          "> 1 means faster\n", flush=True)

    before = descendants()
    results = {"started": started, "args": vars(args), "environment": env, "workloads": {}}
    for key in wanted:
        t_w = time.perf_counter()
        load = os.getloadavg()
        try:
            wl = importlib.import_module(workloads[key]).WORKLOAD
            table = run_workload(ctx, wl)
        except Exception as e:
            print(f"== {key}: FAILED: {type(e).__name__}: {e}\n", flush=True)
            traceback.print_exc()
            results["workloads"][key] = {"error": f"{type(e).__name__}: {e}"}
            continue
        table.notes.append(f"load avg at start {load[0]:.2f}; workload took "
                           f"{time.perf_counter() - t_w:.1f} s")
        if load[0] > 1.0:
            table.notes.append("the machine was busy (1-min load avg > 1.0 on 2 cores): "
                               "other processes share the cores, expect noisy ratios")
        print(render(table) + "\n", flush=True)
        results["workloads"][key] = table.to_json()

    stopped = shutdown_library_pools()
    strays = {pid: d for pid, d in descendants().items()
              if pid not in before and d != "resource_tracker"}
    if strays:
        import psutil

        for pid in strays:  # ours (our descendants), ended by pid
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
    results["cleanup"] = {"stopped": stopped, "stray_processes_killed": list(strays.values())}
    results["seconds"] = time.perf_counter() - t_run
    print(f"cleanup: stopped {', '.join(stopped) or 'nothing'}; "
          f"stray processes: {list(strays.values()) or 'none'}")
    if not args.no_save:
        out_dir = os.path.join(HERE, "results")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"{started}.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(f"wrote {os.path.relpath(path, os.getcwd())}")
    print(f"total {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
