"""The lock order of a process stage, as levels (`_core.locks`): a thread takes these locks in increasing levels only.

    EXECUTOR  ProcessExecutor._lock     the pool's worker list, each worker's outstanding pieces
    BACKLOGS  Backlogs._lock            the messages waiting for each worker's pipe
    SEND      WorkerProc.send_lock      one worker's pipe: a write, or its closing (under EXECUTOR
                                        when a dead worker is replaced)
    LIVES     recycle._lives_lock       the per-worker lifespan records: a leaf

With ``EZFLOW_CHECK_LOCKS=1`` (the test suite) taking one of these while
holding one of the same or a higher level raises AssertionError.
"""

from __future__ import annotations

__all__ = ["BACKLOGS", "EXECUTOR", "LIVES", "SEND"]

EXECUTOR = 10
BACKLOGS = 20
SEND = 30
LIVES = 90
