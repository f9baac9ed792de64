"""Pick the executor that runs a stage's workers, by mode or backend.

Every executor has the same small contract with its `StageDriver`:

    setup()   start workers and build the stage in each (a class is
              instantiated there); raise `StageError` if that fails
    close()   the stage's work is all done: tear down, give pools back
              (never blocks: it may be called from a worker thread)
    cancel()  stop now
    join(t)   wait up to t seconds for the executor's own threads

Workers pull pieces with ``driver.next_piece()`` and report with
``driver.on_result(...)``. Backends are imported by name only when a stage
uses them, so dask is never imported by a run that does not need it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["make_executor", "StageError"]

_MODULES = {
    "thread": "thread",
    "process": "process",
    "async": "aio",
    "dask": "dask",
    "inline": "inline",
}


class StageError(RuntimeError):
    """A stage could not start: its function or class failed to load or build."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"stage {stage!r} could not start: {message}")
        self.stage = stage


def make_executor(spec: Any, driver: Any) -> Any:
    """Return the executor for this stage."""
    kind = "dask" if spec.backend is not None else spec.mode
    module = import_module(f"ezflow._executors.{_MODULES[kind]}")
    return module.Executor(spec, driver)
