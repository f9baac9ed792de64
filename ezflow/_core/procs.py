"""Worker processes: one start-method list, one way to start a worker with its pipe, one fork rule.

    start_child(target, start_method=..., name=..., daemon=...) -> (process, owner's end of its pipe)
        the child runs target(its end of the pipe, the owner's pid, *args)

Flow's worker pools (`_executors.pool`) and the ezq layer's `run()` both
start their workers here. Only the owner holds the owner end of a worker's
pipe: a forked child closes the copies it inherited (the fork hook below, in `forks`,
and the lock that keeps a fork from landing between a pipe's creation and
the child taking its end), so when the owner dies, even by SIGKILL, its
workers read EOF at once.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .forks import at_fork

__all__ = ["START_METHODS", "check_start_method", "close_end", "start_child"]

START_METHODS = ("fork", "spawn", "forkserver")

_owner_ends: weakref.WeakSet[Connection] = weakref.WeakSet()
_fork_lock = threading.RLock()


def check_start_method(method: str) -> None:
    """Raise ValueError, naming the choices, unless `method` is a start method usable here."""
    here = multiprocessing.get_all_start_methods()
    if method not in START_METHODS or method not in here:
        allowed = ", ".join(repr(m) for m in START_METHODS if m in here)
        raise ValueError(f"start_method must be None or one of {allowed}; got {method!r}")


def start_child(
    target: Callable[..., Any], *, start_method: str, name: str, daemon: bool, args: tuple[Any, ...] = ()
) -> tuple[Any, Connection]:
    """Start ``target(child_end, owner_pid, *args)`` in a new process; return it and the owner's end.

    Raises:
        whatever ``Process.start`` raises (a target or argument that cannot be pickled for spawn).
    """
    ctx = multiprocessing.get_context(start_method)
    # From the pipe's creation until the child has its end, no fork from another thread:
    # that child would keep a copy of the owner end and hide the owner's death.
    with _fork_lock:
        owner_end, child_end = ctx.Pipe(duplex=True)
        _owner_ends.add(owner_end)
        proc = ctx.Process(  # type: ignore[attr-defined]  # every concrete context has it
            target=target, args=(child_end, os.getpid(), *args), name=name, daemon=daemon
        )
        try:
            proc.start()
        except BaseException:
            owner_end.close()
            raise
        finally:
            child_end.close()
    return proc, owner_end


def close_end(conn: Connection) -> None:
    """Close the owner's end of a worker's pipe (always this way, never with a bare ``conn.close()``).

    Under the fork lock: a fork landing between the descriptor's close and
    the Connection forgetting it would let the child's fork hook close that
    number again, and it may by then be the new worker's own pipe end (seen
    as a fresh worker exiting at once, about 1 run in 150 under load).
    """
    with _fork_lock:
        _owner_ends.discard(conn)
        conn.close()


def _before_fork() -> None:
    _fork_lock.acquire()


def _after_fork_in_parent() -> None:
    _fork_lock.release()


def _after_fork_in_child() -> None:
    global _fork_lock
    _fork_lock = threading.RLock()
    for conn in list(_owner_ends):
        try:
            conn.close()  # the owner's, not ours: our copy must not keep its pipe open
        except OSError:
            pass
    _owner_ends.clear()


at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
