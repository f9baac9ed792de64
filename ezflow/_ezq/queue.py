"""`Q`: a queue whose messages live in the process that made it; workers reach it through the broker."""

from __future__ import annotations

import heapq
import os
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from .._transport.serialize import dumps, loads
from .child import _Child
from .msg import _KINDS, END_MSG, Msg, QKind
from .state import R, _QState, _release, _settle_released
from .workers import Worker


class Q:
    """A queue of `Msg` between the parent, thread workers and process workers.

    ``Q()`` (kind "process") can be passed to `run` workers under any start
    method, to `run_thread` workers, and inside messages to them; its
    messages are pickled. ``Q("thread")`` stores messages as they are (no
    pickling, so it can carry unpicklable things) and works only inside the
    process that created it.
    """

    __slots__ = ("__weakref__", "_cache", "_closed", "_kind", "_owner", "_qid", "_state", "_tasks")

    def __init__(self, kind: QKind = "process") -> None:
        """Create an empty queue.

        Args:
            kind: "process" (default) or "thread".

        Raises:
            ValueError: `kind` is not one of those two.
        """
        if kind not in _KINDS:
            raise ValueError(f"Q kind must be 'process' or 'thread', got {kind!r}")
        self._kind: str = kind
        self._owner = os.getpid()
        self._qid = next(R.ids)
        self._state: _QState | None = _QState(self._qid)
        self._cache: list[Msg] | None = None
        self._closed = False
        # a thread Q counts unfinished messages for task_done()/join(), as queue.Queue does
        self._tasks: _Tasks | None = _Tasks() if kind == "thread" else None
        if kind == "process":
            with R.lock:
                R.states[self._qid] = self._state
                R.handles[self._qid] = self
                _settle_released()
            weakref.finalize(self, _release, self._qid, self._owner).atexit = False

    @property
    def kind(self) -> str:
        """Return "process" or "thread"."""
        return self._kind

    def __repr__(self) -> str:
        return f"Q({self._kind!r}, id={self._qid}, owner={self._owner})"

    def __reduce__(self) -> tuple:
        if self._kind == "thread":
            raise TypeError(
                "a Q('thread') cannot be sent to another process; use Q() (kind 'process') with run() workers"
            )
        return (_rebuild_q, (self._qid, self._owner))

    def _local(self) -> _QState | None:
        # None: we are a worker, and the owner is reached through the broker
        if os.getpid() == self._owner:
            return self._state
        if self._kind == "thread":
            raise RuntimeError(
                "a Q('thread') works only inside the process that created it; "
                "use Q() (kind 'process') with run() workers"
            )
        return None

    def put(self, data: Any = None, *, kind: str = "", order: int = 0) -> Q:
        """Put a message on the queue; never blocks.

        Args:
            data: the payload; a `Msg` is put as it is (then `kind` and
                `order` are not used).
            kind: the message's kind.
            order: the message's order (see `sorted`).

        Returns:
            This queue, for chaining.
        """
        if self._closed:
            raise ValueError(f"{self!r} is closed in this process: put() after close()")
        msg = data if isinstance(data, Msg) else Msg(data, kind, order)
        state = self._local()
        if self._kind == "thread":
            assert state is not None
            assert self._tasks is not None
            self._tasks.add()
            state.push(msg)
            return self
        raw = dumps(msg)
        if state is not None:
            state.push(raw)
        else:
            _Child.for_owner(self._owner).put(self._qid, raw)
        return self

    def get(self, block: bool = True, timeout: float | None = None) -> Msg:
        """Remove and return the next message, the end marker included.

        Args:
            block: wait for a message; if False, `timeout` is 0.
            timeout: seconds to wait; None waits as long as it takes.

        Returns:
            The message.

        Raises:
            queue.Empty: no message came in time.
            ValueError: `timeout` is negative.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
        limit = timeout if block else 0.0
        state = self._local()
        if state is not None:
            item = state.pop(limit)
        else:
            item = _Child.for_owner(self._owner).get(self._qid, limit)
        return item if self._kind == "thread" else loads(item)

    # -- the queue methods ezq's Q delegated to its multiprocessing.Queue --------------

    def qsize(self) -> int:
        """Return the number of messages waiting (end markers included); exact, unlike multiprocessing's."""
        state = self._local()
        if state is not None:
            return len(state.items)
        return _Child.for_owner(self._owner).size(self._qid)

    def empty(self) -> bool:
        """Return True if no message is waiting."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Return False: a Q is unbounded (`put` never blocks)."""
        return False

    def get_nowait(self) -> Msg:
        """Remove and return the next message if one is waiting; raise `queue.Empty` otherwise."""
        return self.get(block=False)

    def put_nowait(self, data: Any = None, *, kind: str = "", order: int = 0) -> Q:
        """Put a message; the same as `put`, which never blocks."""
        return self.put(data, kind=kind, order=order)

    def close(self) -> None:
        """Say this process puts no more messages: a later `put` here raises ValueError.

        Other processes' handles, and reading, are not affected (as with
        ``multiprocessing.Queue.close``).
        """
        self._closed = True

    def task_done(self) -> None:
        """Say a message taken from this thread Q is processed (as ``queue.Queue.task_done``).

        Raises:
            ValueError: called more times than messages were put.
            TypeError: on a process Q (``multiprocessing.Queue`` has no task_done either).
        """
        self._need_tasks("task_done").done()

    def join(self) -> None:
        """Wait until every message put on this thread Q was taken and marked `task_done`."""
        self._need_tasks("join").wait()

    def _need_tasks(self, what: str) -> _Tasks:
        if self._tasks is None:
            raise TypeError(
                f"{what}() is for Q('thread') (a queue.Queue's methods); a process Q is a multiprocessing.Queue, "
                "which has none: count results on an output Q instead"
            )
        return self._tasks

    def join_thread(self) -> None:
        """Return at once: a put is delivered when `put` returns (no feeder thread to wait for)."""

    def cancel_join_thread(self) -> None:
        """Do nothing: there is no feeder thread whose exit could wait on a reader."""

    def __iter__(self) -> Iterator[Msg]:
        """Yield messages until an end marker, which is consumed, not yielded."""
        while True:
            msg = self.get()
            if msg.kind == END_MSG.kind:
                return
            yield msg

    def sorted(self, start: int = 0) -> Iterator[Msg]:
        """Yield messages by `Msg.order`, from `start` up, until the end marker.

        Orders are expected to count up by one. A message waits until all
        orders before it have been yielded; what is still waiting at the end
        (after a gap), and any message whose order was already passed (a
        duplicate, or below `start`), is yielded at the end, by order.

        Args:
            start: the first order to yield.

        Yields:
            The messages.
        """
        expected = start
        waiting: list[tuple[int, int, Msg]] = []
        late: list[tuple[int, int, Msg]] = []
        for seq, msg in enumerate(self):
            heapq.heappush(waiting, (msg.order, seq, msg))
            # a stale order at the top must not hold back the ones behind it
            while waiting and waiting[0][0] <= expected:
                entry = heapq.heappop(waiting)
                if entry[0] == expected:
                    expected += 1
                    yield entry[2]
                else:
                    late.append(entry)
        for _, _, msg in sorted(waiting + late, key=lambda e: (e[0], e[1])):
            yield msg

    def items(self, cache: bool = False, sort: bool = False) -> Iterator[Msg]:
        """End the queue, then return an iterator over its messages.

        Args:
            cache: keep the messages, so later calls return the same ones
                (the first call's `sort` decides their order).
            sort: yield them by `Msg.order` (see `sorted`).

        Returns:
            An iterator over the messages up to the end marker.
        """
        if cache:
            if self._cache is None:
                self.end()
                self._cache = list(self.sorted() if sort else self)
            return iter(self._cache)
        self.end()
        return self.sorted() if sort else iter(self)

    def end(self) -> Q:
        """Put the end marker: one reader stops when it gets to it.

        Returns:
            This queue, for chaining.
        """
        return self.put(END_MSG)

    def stop(self, workers: Worker | Iterable[Worker]) -> Q:
        """End the queue once per worker, join them all, then raise a failure.

        Args:
            workers: the workers that read this queue.

        Returns:
            This queue, for chaining.

        Raises:
            BaseException: the exception of the first failed worker (in the
                order given), with its traceback text as ``__cause__``; a
                note names the other workers that failed.
        """
        group = [workers] if isinstance(workers, Worker) else list(workers)
        for _ in group:
            self.end()
        for w in group:
            w.join()
        failed = [w for w in group if w.exception is not None]
        if failed:
            exc = failed[0].exception
            assert exc is not None
            if len(failed) > 1 and hasattr(exc, "add_note"):
                others = ", ".join(f"{w.name} ({type(w.exception).__name__})" for w in failed[1:])
                exc.add_note(f"other workers failed too: {others}")
            raise exc
        return self


class _Tasks:
    """Unfinished messages of a thread Q: put adds one, task_done removes one, join waits for none."""

    __slots__ = ("cond", "unfinished")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.unfinished = 0

    def add(self) -> None:
        with self.cond:
            self.unfinished += 1

    def done(self) -> None:
        with self.cond:
            if self.unfinished <= 0:
                raise ValueError("task_done() called too many times")
            self.unfinished -= 1
            if self.unfinished == 0:
                self.cond.notify_all()

    def wait(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.unfinished == 0)


def _rebuild_q(qid: int, owner: int) -> Q:
    if os.getpid() == owner:
        with R.lock:
            handle = R.handles.get(qid)
            if handle is not None:
                return handle
            state = R.states.get(qid)
            if state is None:
                raise RuntimeError(f"Q {qid} no longer exists in this process")
            state.orphan = False
    else:
        state = None
    q = Q.__new__(Q)
    q._qid, q._kind, q._owner, q._state, q._cache, q._closed = qid, "process", owner, state, None, False
    q._tasks = None
    if state is not None:
        with R.lock:
            R.handles[qid] = q
            _settle_released()
        weakref.finalize(q, _release, qid, owner).atexit = False
    return q
