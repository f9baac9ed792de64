"""Worker lifespan options, checked when a stage is built.

    make_stage(max_tasks_per_worker=, max_memory=) --> check_lifespan() --> (int | None, bytes | None)

Both options replace worker *processes*, so only process stages take them:

- a thread or async stage runs in the caller's own process: there is no
  worker to replace, and no per-worker memory to measure or give back;
- a dask stage runs on workers the cluster starts and shares with other
  work; dask has its own knobs for both, set on the cluster (named in the
  error), and ezflow never ignores an option silently.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["MIN_MEMORY", "check_lifespan", "parse_memory"]

# A Python worker process alone uses some 10-60 MB: a smaller limit is surely a typo ("2" for "2GB").
MIN_MEMORY = 16 * 2**20

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)

_NOT_HERE = {
    "thread": "threads share the caller's process: there is no worker process to replace",
    "async": "async tasks share the caller's process: there is no worker process to replace",
}
_DASK = {
    "max_tasks_per_worker": (
        "dask starts and shares its workers, so ezflow cannot replace them; have the cluster recycle "
        "them instead: `dask worker --lifetime 1h --lifetime-restart` (config "
        "distributed.worker.lifetime.duration), or run the stage locally (mode='process')"
    ),
    "max_memory": (
        "set the limit on the cluster instead: memory_limit='2GB' per worker (LocalCluster(memory_limit=...), "
        "`dask worker --memory-limit 2GB`); dask's nanny restarts a worker past 95% of it, and an item whose "
        "workers keep dying ends as ezflow.WorkerDied; or run the stage locally (mode='process')"
    ),
}


def parse_memory(value: Any) -> int:
    """Return a memory size in bytes: an int, or a string such as "2GB", "500MB", "1.5GiB".

    kB/MB/GB/TB (and k/M/G/T) are powers of 1000, KiB/MiB/GiB/TiB powers of 1024.

    Raises:
        TypeError, ValueError: not a size, or smaller than `MIN_MEMORY`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(
            f"max_memory must be a size in bytes (int) or a string such as '2GB' or '1.5GiB', "
            f"got {type(value).__name__} {value!r}"
        )
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in _UNITS:
            raise ValueError(
                f"max_memory {value!r} is not a size: use bytes, or a number with a unit "
                "(kB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024), e.g. '2GB'"
            )
        number = float(m.group(1))
        if not math.isfinite(number):
            raise ValueError(f"max_memory must be finite, got {value!r}")
        size = int(number * _UNITS[unit])
    if size < MIN_MEMORY:
        raise ValueError(
            f"max_memory must be at least {MIN_MEMORY >> 20} MiB (a Python worker alone uses 10-60 MB), "
            f"got {value!r} (a size without a unit is in bytes: write e.g. '2GB')"
        )
    return size


def check_lifespan(name: str, where: str, max_tasks: Any, max_memory: Any) -> tuple[int | None, int | None]:
    """Check the lifespan options of stage `name` running on `where` ("process", "thread", "async", "dask").

    Returns:
        ``(max_tasks_per_worker, max_memory in bytes)``, None where unset.

    Raises:
        TypeError, ValueError: an invalid value, or an option `where` cannot honour (with the reason and the fix).
    """
    if max_tasks is not None:
        if isinstance(max_tasks, bool) or not isinstance(max_tasks, int):
            kind = type(max_tasks).__name__
            raise TypeError(f"max_tasks_per_worker must be an int >= 1 or None, got {kind} {max_tasks!r}")
        if max_tasks < 1:
            raise ValueError(f"max_tasks_per_worker must be >= 1, got {max_tasks}")
    size = None if max_memory is None else parse_memory(max_memory)
    for option, used in (("max_tasks_per_worker", max_tasks is not None), ("max_memory", size is not None)):
        if not used or where == "process":
            continue
        if where == "dask":
            raise ValueError(f"stage {name!r}: {option}= is not supported on a dask stage (backend=): {_DASK[option]}")
        raise ValueError(
            f"stage {name!r}: {option}= needs mode='process' ({_NOT_HERE.get(where, where)}); "
            f"use mode='process' or drop {option}="
        )
    return max_tasks, size
