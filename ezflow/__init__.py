"""ezflow: parallel map and multi-stage pipelines, easy and safe in notebooks.

The public surface is this module; everything else is private.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._api import imap
from ._api import map as map  # public as ezflow.map, kept out of __all__ (see below)
from ._core.env import NUM_CPUS, NUM_THREADS
from ._core.errors import Cancelled, Failure, ItemTimeout, MemoryLimitExceeded, RemoteError, TaskError, WorkerDied
from ._core.insights import FailedItem, SlowItem, WorkerStats
from ._core.stats import FlowStats, StageStats
from ._executors import StageError
from ._executors.pool import shutdown
from ._flow import Flow

if _TYPE_CHECKING:  # what loads on first use, named here for type checkers and the API reference
    from ._apply import apply
    from ._engine.checkpoint_store import CheckpointError
    from ._engine.feed import FlowStopped
    from ._executor_api import Executor
    from ._ezq.q import Msg, Q, run, run_thread
    from ._transport.shm import SharedMemoryWarning, share

__version__ = "0.1.0"

# The ezq-compatible layer and shared memory load on first use: `import ezflow` stays light.
_EZQ = frozenset({"Msg", "Q", "run", "run_thread"})
_SHM = frozenset({"share", "SharedMemoryWarning"})
_FEED = frozenset({"FlowStopped"})  # raised by handle.process / submit futures: loads with the feed
_CHECKPOINT = frozenset({"CheckpointError"})  # loads with the checkpoint store (a flow with checkpoint=)
_EXECUTOR = frozenset({"Executor"})  # concurrent.futures (and its logging import) load on first use
_APPLY = frozenset({"apply"})  # DataFrame rows: not on a plain map's path


def __getattr__(name: str) -> object:
    if name in _EZQ:
        from ._ezq import q

        value = getattr(q, name)
    elif name in _SHM:
        from ._transport import shm

        value = getattr(shm, name)
    elif name in _FEED:
        from ._engine import feed

        value = getattr(feed, name)
    elif name in _CHECKPOINT:
        from ._engine import checkpoint_store

        value = getattr(checkpoint_store, name)
    elif name in _EXECUTOR:
        from . import _executor_api

        value = _executor_api.Executor
    elif name in _APPLY:
        from . import _apply

        value = _apply.apply
    else:
        raise AttributeError(f"module 'ezflow' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily loaded ones too (dir() and Tab completion list them)."""
    return sorted(set(globals()) | _EZQ | _SHM | _FEED | _CHECKPOINT | _EXECUTOR | _APPLY)


# `map` is public (``ezflow.map``) but not in __all__: `from ezflow import *` must not replace the builtin.
__all__ = [
    "NUM_CPUS",
    "NUM_THREADS",
    "Cancelled",
    "CheckpointError",
    "Executor",
    "FailedItem",
    "Failure",
    "Flow",
    "FlowStats",
    "FlowStopped",
    "ItemTimeout",
    "MemoryLimitExceeded",
    "Msg",
    "Q",
    "RemoteError",
    "SharedMemoryWarning",
    "SlowItem",
    "StageError",
    "StageStats",
    "TaskError",
    "WorkerDied",
    "WorkerStats",
    "__version__",
    "apply",
    "imap",
    "run",
    "run_thread",
    "share",
    "shutdown",
]
