"""Facts about this machine and interpreter that every layer reads."""

from __future__ import annotations

import multiprocessing
import os
import sys

__all__ = ["NUM_CPUS", "NUM_THREADS", "default_start_method", "in_notebook"]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


NUM_CPUS: int = _cpus()
"""Number of CPUs this process may run on."""

NUM_THREADS: int = min(32, NUM_CPUS + 4)
"""Default number of threads (CPython's ThreadPoolExecutor default)."""


def default_start_method() -> str:
    """Return the start method ezflow uses when a stage does not name one.

    A method the user set with ``multiprocessing.set_start_method`` wins.
    Otherwise: "fork" on Linux before Python 3.12 (fastest start, and what
    Pool uses there); "forkserver" on Linux from 3.12 on (forking a
    multi-threaded process is deprecated there, and 3.14 makes it the
    default); "spawn" elsewhere.
    """
    chosen = multiprocessing.get_start_method(allow_none=True)
    if chosen:
        return chosen
    if sys.platform.startswith("linux"):
        return "fork" if sys.version_info < (3, 12) else "forkserver"
    return "spawn"


def in_notebook() -> bool:
    """Return True inside a Jupyter kernel (a ZMQ-based IPython shell)."""
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    try:
        shell = ip.get_ipython()
    except Exception:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
