"""Locks with a place in a lock order, checked when ``EZFLOW_CHECK_LOCKS=1`` (the test suite sets it).

    ordered_lock("process executor", 10)   a plain `threading.Lock` normally, at no cost;
    ordered_lock("worker lives", 90)       with checks on, an `OrderedLock`: a thread that
                                           holds a lock of level >= n and takes one of level
                                           n raises AssertionError (the order is inverted)

A lock's level says where it sits in the order: a thread takes locks in
strictly increasing levels, so two threads can never wait on each other. The
order lives in the levels, in code, not in comments; tests run with the
checks on, so a change that takes two locks the wrong way round fails there
even when no deadlock happens to occur.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

__all__ = ["CHECK", "LockLike", "OrderedLock", "ordered_lock"]

CHECK = os.environ.get("EZFLOW_CHECK_LOCKS") == "1"

_held = threading.local()  # .locks: the OrderedLocks this thread holds, in the order taken

if TYPE_CHECKING:  # for the type checker only: `import ezflow` builds no Protocol class
    from types import TracebackType
    from typing import Protocol

    class LockLike(Protocol):
        """What a lock offers: a plain `threading.Lock` or an `OrderedLock`."""

        def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

        def release(self) -> None: ...

        def locked(self) -> bool: ...

        def __enter__(self) -> bool: ...

        def __exit__(
            self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
        ) -> None: ...


def _stack() -> list[OrderedLock]:
    stack: list[OrderedLock] | None = getattr(_held, "locks", None)
    if stack is None:
        stack = _held.locks = []
    return stack


class OrderedLock:
    """A lock that asserts the order it is taken in: never while this thread holds one of its level or higher."""

    __slots__ = ("_lock", "level", "name")

    def __init__(self, name: str, level: int) -> None:
        self.name = name
        self.level = level
        self._lock = threading.Lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; raise AssertionError if this thread holds a lock that comes after it in the order."""
        stack = _stack()
        while stack and not stack[-1]._lock.locked():
            # a signal handler (SIGTERM, Ctrl-C) raised between a release and its bookkeeping:
            # the entry names a lock nobody holds; without this, every later take of the
            # process's exit path failed the order check
            stack.pop()
        if stack and stack[-1].level >= self.level:
            top = stack[-1]
            raise AssertionError(
                f"lock order: {self.name!r} (level {self.level}) taken while holding {top.name!r} "
                f"(level {top.level}); take {self.name!r} first"
            )
        got = self._lock.acquire(blocking, timeout)
        if got:
            stack.append(self)
        return got

    def release(self) -> None:
        """Release the lock."""
        self._lock.release()
        stack = _stack()
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self:
                del stack[i]
                break

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<OrderedLock {self.name!r} level {self.level}>"


def ordered_lock(name: str, level: int) -> LockLike:
    """Return the lock at `level` of the order: an `OrderedLock` when checks are on, else a plain `threading.Lock`."""
    if CHECK:
        return OrderedLock(name, level)
    return threading.Lock()
