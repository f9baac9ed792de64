"""ezflow: parallel map and multi-stage pipelines, easy and safe in notebooks.

The public surface is this module; everything else is private.
"""

from ._env import NUM_CPUS, NUM_THREADS
from ._errors import Failure, ItemTimeout, RemoteError, TaskError, WorkerDied
from ._stats import FlowStats, StageStats

__version__ = "0.1.0"

__all__ = [
    "NUM_CPUS",
    "NUM_THREADS",
    "Failure",
    "FlowStats",
    "ItemTimeout",
    "RemoteError",
    "StageStats",
    "TaskError",
    "WorkerDied",
    "__version__",
]
