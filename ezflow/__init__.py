"""ezflow: parallel map and multi-stage pipelines, easy and safe in notebooks.

The public surface is this module; everything else is private.
"""

from ._api import imap, map
from ._core.env import NUM_CPUS, NUM_THREADS
from ._core.errors import Failure, ItemTimeout, RemoteError, TaskError, WorkerDied
from ._core.stats import FlowStats, StageStats
from ._executors import StageError
from ._executors.pool import shutdown
from ._flow import Flow

__version__ = "0.1.0"

# The ezq-compatible layer and shared memory load on first use: `import ezflow` stays light.
_LAZY = {
    "Msg": "._ezq.q",
    "Q": "._ezq.q",
    "run": "._ezq.q",
    "run_thread": "._ezq.q",
    "share": "._transport.shm",
    "SharedMemoryWarning": "._transport.shm",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ezflow' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily loaded ones too (dir() and Tab completion list them)."""
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "NUM_CPUS",
    "NUM_THREADS",
    "Failure",
    "Flow",
    "FlowStats",
    "ItemTimeout",
    "Msg",
    "Q",
    "RemoteError",
    "SharedMemoryWarning",
    "StageError",
    "StageStats",
    "TaskError",
    "WorkerDied",
    "__version__",
    "imap",
    "map",
    "run",
    "run_thread",
    "share",
    "shutdown",
]
