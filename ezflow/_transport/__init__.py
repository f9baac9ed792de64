"""Transport: how functions, items and arrays reach another process.

    fn    --dill by value / pickle by name-->  worker
    items --pickle protocol 5-------------->  worker
    numpy buffers ---shared-memory segments->  worker (no copy of the buffer)

    ezflow's pickler (pickler.py) --references--> segments (segments.py, registry.py, mapping.py)
    share() (share.py); a process stage's side of it all (link.py); shm.py is their front

May import: `ezflow._core`. Two hooks here keep the executors above from
being reached into: a worker says whose segments it makes
(`set_worker_parent`), and ``shutdown()`` frees what is kept for reuse
(`flush_kept`) without importing shared memory where it was never used;
a worker with nothing to do lets go of what it keeps for the next item
(`idle`).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["flush_kept", "idle", "set_worker_parent", "when_flushing", "when_idle", "worker_parent"]

_parent: int | None = None
_flushers: list[Callable[[], None]] = []
_idlers: list[Callable[[], None]] = []


def set_worker_parent(pid: int) -> None:
    """This process is a worker of `pid`: that process owns the shared-memory segments made here."""
    global _parent
    _parent = pid


def worker_parent() -> int | None:
    """The pid that owns what this worker makes, or None outside a worker."""
    return _parent


def when_flushing(flush: Callable[[], None]) -> None:
    """Have `flush_kept` call `flush` (the shared-memory registry registers itself on import)."""
    _flushers.append(flush)


def flush_kept() -> None:
    """Free what transport keeps for reuse (``ezflow.shutdown()``); nothing if it was never used."""
    for flush in list(_flushers):
        flush()


def when_idle(drop: Callable[[], None]) -> None:
    """Have `idle` call `drop` (shared memory's kept mappings register themselves on import)."""
    _idlers.append(drop)


def idle() -> None:
    """A worker has had nothing to do for a while: let go of what is kept for the next item."""
    for drop in list(_idlers):
        drop()
