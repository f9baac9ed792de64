"""Worker lifespan options, checked when a stage is built.

    make_stage(max_tasks_per_worker=, max_memory=) --> check_lifespan() --> (int | None, bytes | None)
                                                   --> options.check_support(): process stages only

Both options replace worker *processes*, so only process stages take them
(the reasons, and dask's own knobs, are in `options.SUPPORT`): a thread or
async stage runs in the caller's process, and a dask stage on workers the
cluster starts and shares; ezflow never ignores an option silently.
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
# compiled on first use (a size given as a string): compiling it cost ~0.3 ms of every `import ezflow`
_SIZE = r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$"


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
        m = re.match(_SIZE, value, re.IGNORECASE)  # re caches the compiled pattern
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


def check_lifespan(max_tasks: Any, max_memory: Any) -> tuple[int | None, int | None]:
    """Check the values of the lifespan options (which modes take them: `options.SUPPORT`).

    Returns:
        ``(max_tasks_per_worker, max_memory in bytes)``, None where unset.

    Raises:
        TypeError, ValueError: an invalid value.
    """
    if max_tasks is not None:
        if isinstance(max_tasks, bool) or not isinstance(max_tasks, int):
            kind = type(max_tasks).__name__
            raise TypeError(f"max_tasks_per_worker must be an int >= 1 or None, got {kind} {max_tasks!r}")
        if max_tasks < 1:
            raise ValueError(f"max_tasks_per_worker must be >= 1, got {max_tasks}")
    return max_tasks, None if max_memory is None else parse_memory(max_memory)
