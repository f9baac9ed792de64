"""Which stage option each mode supports, and the rules for numeric options.

    make_stage(...) --> check_number(...)   NaN, negatives, overflow: ValueError
                    --> check_support(...)  an option the mode cannot honour: ValueError

One table, `SUPPORT`, is the truth for the code and the README
(`support_table()` prints it as Markdown). A mode is where a stage runs:
"thread", "process", "async", "dask" (``backend=`` given), or "inline" (batch
and unbatch, in the driver's thread: they take none of these options). An
option a mode does not support fails when the stage is built, at
``.map(...)``, never mid-run.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_SECONDS", "MODE_NAMES", "SUPPORT", "check_number", "check_support", "support_table"]

# The longest wait ezflow takes: poll() counts milliseconds in a C int (~24.8 days),
# so a larger timeout overflowed inside a thread of the run. 1e6 s is about 11.6 days.
MAX_SECONDS = 1_000_000.0

MODE_NAMES = ("thread", "process", "async", "dask", "inline")

YES, NO, IGNORED = "yes", "no", "ignored"

_SAME_PROCESS = (
    "%s share the caller's process: there is no worker process to replace, nor per-worker memory "
    "to measure or give back; use mode='process'"
)
# dask starts its workers and shares them with other work: its own knobs are set on the cluster
_DASK_LIFETIME = (
    "dask starts and shares its workers, so ezflow cannot replace them; have the cluster recycle them: "
    "`dask worker --lifetime 1h --lifetime-restart` (config distributed.worker.lifetime.duration), "
    "or run the stage locally (mode='process')"
)
_DASK_MEMORY = (
    "set the limit on the cluster: memory_limit='2GB' per worker (LocalCluster(memory_limit=...), "
    "`dask worker --memory-limit 2GB`); dask's nanny restarts a worker past 95% of it, and an item whose "
    "workers keep dying ends as ezflow.WorkerDied; or run the stage locally (mode='process')"
)

# option -> mode -> (support, how it works there / why not and the fix)
SUPPORT: dict[str, dict[str, tuple[str, str]]] = {
    "when": {m: (YES, "") for m in MODE_NAMES[:4]},
    "retries, retry_on, backoff": {m: (YES, "") for m in MODE_NAMES[:4]},
    "errors, ordered, workers, chunksize": {m: (YES, "") for m in MODE_NAMES[:4]},
    "item_timeout": {
        "thread": (YES, "the call is abandoned (a thread cannot be stopped) and a fresh thread takes its place"),
        "process": (YES, "the worker process is killed and replaced"),
        "async": (YES, "the item's coroutine is cancelled"),
        "dask": (NO, "dask cannot stop a running task: drop item_timeout= or run the stage locally (mode='process')"),
    },
    "rate, burst": {
        "thread": (YES, "one token bucket shared by the stage's threads"),
        "process": (YES, "the parent paces its dispatch"),
        "async": (YES, "one token bucket; waits with asyncio.sleep"),
        "dask": (NO, "drop rate= or run the stage locally (mode='thread' or 'process')"),
    },
    "coroutine function": {
        "thread": (NO, "use mode='async' (or leave mode unset)"),
        "process": (NO, "use mode='async' (or leave mode unset)"),
        "async": (YES, ""),
        "dask": (NO, "wrap it, e.g. lambda x: asyncio.run(fn(x)), or use mode='async' without backend="),
    },
    "start_method": {
        "thread": (IGNORED, ""),
        "process": (YES, ""),
        "async": (IGNORED, ""),
        "dask": (IGNORED, "the cluster starts its own workers"),
    },
    "share_arrays": {
        "thread": (IGNORED, "threads share memory already"),
        "process": (YES, ""),
        "async": (IGNORED, "one process"),
        "dask": (IGNORED, "dask moves data its own way"),
    },
    "max_tasks_per_worker": {
        "thread": (NO, _SAME_PROCESS % "threads"),
        "process": (YES, "a worker is replaced between pieces; a class is built again, close() runs in the old one"),
        "async": (NO, _SAME_PROCESS % "async tasks"),
        "dask": (NO, _DASK_LIFETIME),
    },
    "max_memory": {
        "thread": (NO, _SAME_PROCESS % "threads"),
        "process": (YES, "the parent samples each worker's RSS; an item that crosses it fails (MemoryLimitExceeded)"),
        "async": (NO, _SAME_PROCESS % "async tasks"),
        "dask": (NO, _DASK_MEMORY),
    },
}


def check_support(stage: str, mode: str, used: dict[str, bool]) -> None:
    """Raise ValueError for an option `mode` does not support.

    ``used`` maps a `SUPPORT` row to whether the stage sets it.
    """
    for option, on in used.items():
        if not on:
            continue
        support, note = SUPPORT[option].get(mode, (IGNORED, ""))
        if support == NO:
            where = "a dask stage (backend=)" if mode == "dask" else f"mode={mode!r}"
            what = "a coroutine function" if option == "coroutine function" else f"{option.split(',')[0]}="
            raise ValueError(f"stage {stage!r}: {what} is not supported on {where}; {note}")


def check_number(
    name: str,
    value: Any,
    *,
    low: float,
    low_ok: bool,
    unit: str,
    high: float | None = MAX_SECONDS,
    inf_is_none: bool = False,
) -> float | None:
    """Return a float option checked against its rule; None stays None.

    The rule: a real number (not a bool), not NaN, above `low` (or equal if
    `low_ok`), at most `high`. With `inf_is_none`, infinity means "none" (no
    timeout, no rate limit) and is returned as None.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or _is_real(value)):
        raise TypeError(f"{name} must be a number of {unit}, got {type(value).__name__} {value!r}")
    v = float(value)
    bound = f">= {low:g}" if low_ok else f"> {low:g}"
    if math.isnan(v):
        raise ValueError(f"{name} must be a number of {unit} {bound}, got NaN")
    if v < low or (v == low and not low_ok):
        raise ValueError(f"{name} must be {bound} {unit}, got {value!r}")
    if math.isinf(v):
        if inf_is_none:
            return None
        raise ValueError(f"{name} must be finite (at most {high:g} {unit}), got {value!r}")
    if high is not None and v > high:
        fix = f"; use None or float('inf') for no {name}" if inf_is_none else ""
        raise ValueError(f"{name} must be at most {high:g} {unit} (about {high / 86400:.1f} days), got {value!r}{fix}")
    return v


def support_table() -> str:
    """Return `SUPPORT` as a Markdown table (for the README)."""
    modes = MODE_NAMES[:4]
    lines = ["| option | " + " | ".join(modes) + " | inline (batch, unbatch) |"]
    lines.append("|---" * (len(modes) + 2) + "|")
    for option, row in SUPPORT.items():
        cells = []
        for m in modes:
            support, note = row[m]
            cells.append(f"{support}: {note}" if note and support != YES else (f"yes ({note})" if note else support))
        lines.append(f"| {option} | " + " | ".join(cells) + " | n/a |")
    return "\n".join(lines)


def _is_real(value: Any) -> bool:
    """Whether `value` is a real number of another type (a numpy scalar, a Fraction; a Decimal is not one)."""
    import numbers  # on first use: ~0.3 ms of `import ezflow`, for options that are almost always int or float

    return isinstance(value, numbers.Real)
