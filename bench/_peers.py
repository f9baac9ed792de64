"""The standard set of parallel-map implementations, one function each.

Every function takes a ``MapInput`` and returns the list of results in input
order, like ``list(map(fn, items))``. Each one creates and tears down its own
pool inside the call, as a user's one-liner would, except where the library
itself keeps a pool between calls (joblib's loky executor; ezflow, if it
does): that reuse is part of what the library offers and is reported in the
``reuses pool`` note.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from ._harness import Impl

WORKERS = 2


@dataclass(frozen=True)
class MapInput:
    fn: Callable[[Any], Any]
    items: list

    def __len__(self) -> int:
        return len(self.items)


def pool_default_chunksize(n: int, workers: int = WORKERS) -> int:
    """The chunksize ``multiprocessing.Pool.map`` picks by default."""
    chunksize, extra = divmod(n, workers * 4)
    return max(1, chunksize + (1 if extra else 0))


# --- ezflow ---------------------------------------------------------------

def ezflow_unavailable() -> str | None:
    """None if ``ezflow.map`` can be called, else why not."""
    try:
        import ezflow
    except Exception as e:  # the engine is being written concurrently
        return f"import ezflow failed: {type(e).__name__}: {e}"
    for name in ("map", "imap"):
        if not callable(getattr(ezflow, name, None)):
            return f"ezflow.{name} is missing"
    return None


def ezflow_map(inp: MapInput):
    import ezflow

    return ezflow.map(inp.fn, inp.items, workers=WORKERS, progress=False)


# --- peers -----------------------------------------------------------------

def serial_map(inp: MapInput):
    return list(map(inp.fn, inp.items))


def pool_map(inp: MapInput):
    with multiprocessing.Pool(WORKERS) as pool:
        out = pool.map(inp.fn, inp.items)  # default chunksize
        pool.close()
        pool.join()
    return out


def ppe_map(inp: MapInput, chunksize: int = 1):
    with ProcessPoolExecutor(max_workers=WORKERS) as ex:
        return list(ex.map(inp.fn, inp.items, chunksize=chunksize))


def ppe_map_tuned(inp: MapInput):
    return ppe_map(inp, chunksize=pool_default_chunksize(len(inp.items)))


def joblib_map(inp: MapInput):
    from joblib import Parallel, delayed

    fn = inp.fn
    return Parallel(n_jobs=WORKERS)(delayed(fn)(x) for x in inp.items)


def mpire_map(inp: MapInput):
    from mpire import WorkerPool

    # NB: mpire unpacks tuple items into positional arguments (dicts into
    # keywords); our inputs are plain ints, so fn(item) is what runs.
    with WorkerPool(n_jobs=WORKERS) as pool:
        return pool.map(inp.fn, inp.items)


def pypeln_map(inp: MapInput):
    import pypeln as pl

    # pypeln.process.map yields in completion order; sync.ordered restores
    # input order in this process (cheaper than process.ordered, which adds
    # another process hop).
    return list(pl.sync.ordered(pl.process.map(inp.fn, inp.items, workers=WORKERS)))


def map_impls(n_items: int) -> list[Impl]:
    """The standard registry for a map workload of ``n_items`` items."""
    tuned = pool_default_chunksize(n_items)
    tuned_fn = functools.partial(ppe_map, chunksize=tuned)
    functools.update_wrapper(tuned_fn, ppe_map)
    return [
        Impl("serial (builtin map)", serial_map, kind="serial"),
        Impl("multiprocessing.Pool.map", pool_map,
             note=f"default chunksize={tuned}"),
        Impl("ProcessPoolExecutor.map chunksize=1", ppe_map),
        Impl(f"ProcessPoolExecutor.map chunksize={tuned}", tuned_fn,
             note="tuned: Pool's default chunksize"),
        Impl("joblib.Parallel(n_jobs=2)", joblib_map,
             note="batch_size=auto"),
        Impl("mpire.WorkerPool(2).map", mpire_map),
        Impl("pypeln.process.map(workers=2)", pypeln_map,
             note="+ sync.ordered"),
        Impl("ezflow.map", ezflow_map, kind="ezflow",
             unavailable=ezflow_unavailable, note="progress=False"),
    ]


# --- clean-up of pools that libraries keep between calls -------------------

def shutdown_library_pools() -> list[str]:
    """Stop pools that outlive a call; return what was stopped."""
    import sys

    done = []
    if "joblib" in sys.modules:
        try:
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)
            done.append("joblib/loky reusable executor")
        except Exception as e:  # pragma: no cover - best effort
            done.append(f"joblib/loky shutdown failed: {e!r}")
    utils = sys.modules.get("pypeln.process.utils")
    if utils is not None and getattr(utils, "MANAGER", None) is not None:
        try:
            utils.MANAGER.shutdown()
            utils.MANAGER = None
            done.append("pypeln's global multiprocessing.Manager")
        except Exception as e:  # pragma: no cover
            done.append(f"pypeln manager shutdown failed: {e!r}")
    ez = sys.modules.get("ezflow")
    if ez is not None:
        for name in ("shutdown", "close", "shutdown_pools"):
            fn = getattr(ez, name, None)
            if callable(fn):
                try:
                    fn()
                    done.append(f"ezflow.{name}()")
                except Exception as e:  # pragma: no cover
                    done.append(f"ezflow.{name}() failed: {e!r}")
                break
    return done


__all__ = [
    "MapInput",
    "WORKERS",
    "map_impls",
    "pool_default_chunksize",
    "ezflow_unavailable",
    "shutdown_library_pools",
]
