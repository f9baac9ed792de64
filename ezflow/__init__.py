"""ezflow: parallel map and multi-stage pipelines, easy and safe in notebooks.

The public surface is this module; everything else is private.
"""

from ._api import imap, map
from ._env import NUM_CPUS, NUM_THREADS
from ._errors import Failure, ItemTimeout, RemoteError, TaskError, WorkerDied
from ._executors import StageError
from ._flow import Flow
from ._pool import shutdown
from ._stats import FlowStats, StageStats

__version__ = "0.1.0"

__all__ = [
    "NUM_CPUS",
    "NUM_THREADS",
    "Failure",
    "Flow",
    "FlowStats",
    "ItemTimeout",
    "RemoteError",
    "StageError",
    "StageStats",
    "TaskError",
    "WorkerDied",
    "__version__",
    "imap",
    "map",
    "shutdown",
]
