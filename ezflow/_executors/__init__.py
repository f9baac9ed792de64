"""Executors: run a stage's pieces on workers (threads, processes, an event loop, dask).

    engine --StagePort (port.py)--> Executor (base.py) <-- thread.py / process.py / aio.py / dask.py / inline.py

Owns: the executor base class and its port, one module per backend, the
per-item rules (items.py, limits.py), and the process pool and worker
(pool.py, worker.py), and its workers' lifespans: recycling and the
memory guard (recycle.py). May import: ``_transport``, ``_plan``, ``_core``;
never the engine, the views or the facade.

A backend is one module with one `Executor` subclass; add it to `_BACKENDS`.
Backends load when a stage first uses them, so dask is never imported by a
run that does not need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .._core.errors import StageError
from .base import Executor
from .port import StagePort

if TYPE_CHECKING:
    from .._plan.spec import StageSpec

__all__ = ["Executor", "StageError", "StagePort", "make_executor"]


def _thread() -> type[Executor]:
    from .thread import ThreadExecutor

    return ThreadExecutor


def _process() -> type[Executor]:
    from .process import ProcessExecutor

    return ProcessExecutor


def _async() -> type[Executor]:
    from .aio import AsyncExecutor

    return AsyncExecutor


def _dask() -> type[Executor]:
    from .dask import DaskExecutor

    return DaskExecutor


_BACKENDS: dict[str, Callable[[], type[Executor]]] = {
    "thread": _thread,
    "process": _process,
    "async": _async,
    "dask": _dask,
}


def make_executor(spec: StageSpec, port: StagePort) -> Executor:
    """Return the executor for this stage: its `backend` (dask) if it has one, else its `mode`."""
    kind = "dask" if spec.backend is not None else spec.mode
    return _BACKENDS[kind]()(spec, port)
