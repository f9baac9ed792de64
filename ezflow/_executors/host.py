"""What a process executor's policies may use of it: the `Host` protocol, and its lock order.

    ProcessExecutor (the host) --holds--> Recycling, MemoryGuard, ElasticSizing, Deadlines
                               <--Host----  each policy calls back only through this protocol

Lock order: `lockorder` (the executor's lock comes first; a policy that
needs it takes it itself, never while holding another).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from .._core.threads import Job
from .pool import ProcessPool, WorkerProc
from .port import Piece, StagePort
from .tally import WorkerTally

if TYPE_CHECKING:
    from .._core.locks import LockLike
    from .._plan.spec import StageSpec

__all__ = ["Host"]


class Host(Protocol):
    """The process executor, as its policies see it."""

    spec: StageSpec
    port: StagePort
    pool: ProcessPool | None
    token: int
    cancelled: bool
    closing: bool
    _lock: LockLike
    _threads_lock: threading.Lock
    _tally: WorkerTally

    def _send_setup(self, w: WorkerProc) -> None: ...

    def _wake(self) -> None: ...

    def _close_wake(self) -> None: ...

    def _await_closed(self, w: WorkerProc, wait_close: bool) -> bool: ...

    def _worker_died(self, pieces: Sequence[Piece], err: BaseException) -> None: ...

    def _spawn(
        self,
        target: Callable[[], None],
        role: str,
        after: Callable[[], None] | None = None,
        *,
        own: bool = False,
        also: list[threading.Thread | Job] | None = None,
    ) -> None: ...
