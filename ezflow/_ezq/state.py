"""The owner's side of process Qs: each queue's messages and waiting GETs, and the registry of them."""

from __future__ import annotations

import collections
import itertools
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._core.forks import at_fork
from .channel import _Channel


class _Waiter:
    """A worker's GET that no message has answered yet."""

    __slots__ = ("channel", "done", "req")

    def __init__(self, channel: _Channel, req: int) -> None:
        self.channel = channel
        self.req = req
        self.done = False


class _QState:
    """The messages of one queue, in the process that owns it."""

    __slots__ = ("cond", "items", "orphan", "qid", "waiters")

    def __init__(self, qid: int) -> None:
        self.qid = qid
        # pickled messages for a process Q, Msg objects for a thread Q
        self.items: collections.deque[Any] = collections.deque()
        self.cond = threading.Condition(threading.Lock())
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.orphan = False

    def push(self, item: Any) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify()
            remote = bool(self.waiters)
        if remote:  # a worker is waiting: the broker hands it over
            R.poke(self)

    def pop(self, timeout: float | None) -> Any:
        with self.cond:
            if not self.cond.wait_for(lambda: self.items, timeout):
                raise queue.Empty
            return self.items.popleft()


class _Registry:
    """The process Qs this process owns; a forked child starts it afresh."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        # the broker (broker.py) plugs in here when it loads: no broker, no waiting worker
        self.poke: Callable[[_QState], None] = lambda state: None
        self.busy: Callable[[], bool] = lambda: False
        self.after_fork()

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        self.states: dict[int, _QState] = {}  # process Qs this process owns, by id
        self.handles: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()  # their Q objects
        self.released: collections.deque[int] = collections.deque()  # Qs whose last handle died, to settle


R = _Registry()


def _release(qid: int, owner: int) -> None:
    # The user's last reference to a Q is gone. This runs from a weakref
    # finalizer, maybe inside the garbage collector while this very thread
    # holds _registry_lock (it allocates): never wait for the lock; whoever
    # holds it next settles the release.
    if os.getpid() != owner:
        return
    R.released.append(qid)
    if R.lock.acquire(blocking=False):
        try:
            _settle_released()
        finally:
            R.lock.release()


def _settle_released() -> None:
    """Forget released Qs (holding _registry_lock).

    A worker may still hold one (an inline Q() passed only to workers), so
    it is kept, as an orphan, while any runs.
    """
    while R.released:
        qid = R.released.popleft()
        state = R.states.get(qid)
        if state is None or qid in R.handles:
            continue
        if R.busy():
            state.orphan = True
        else:
            del R.states[qid]


def _purge_orphans() -> None:
    with R.lock:
        _settle_released()
        for qid in [qid for qid, st in R.states.items() if st.orphan]:
            R.states.pop(qid, None)


def _after_fork_in_child() -> None:
    R.after_fork()  # this process owns nothing yet; copied Qs see the pid and go remote



at_fork(after_in_child=_after_fork_in_child)
