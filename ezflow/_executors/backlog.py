"""Task messages too big for a worker's pipe are written off the sender's thread.

    sender thread --put(w, data)--> small, nothing queued for w: written now (never blocks)
                                    else: w's backlog --a kept thread (Job)--> pipe[w], in order

A worker reads its next task only when it is done with the current one, so
writing a message bigger than the pipe's buffer (~208 KiB here: pickled
bytes, strings, records; arrays go by shared memory) waits for that worker.
That write waits on a thread of w's own, and the sender goes on feeding the
other workers. Only the sender thread calls `put`, so a worker's messages
reach its pipe in the order they were put.

Writing such messages into shared memory instead (the pipe carrying only a
name) was tried and measured slower: 16 items of 5-20 MB of bytes or
strings took 1.1-1.7x as long as through the pipe this way (fresh or
reused segments, the worker reading or mapping them).
"""

from __future__ import annotations

import collections
import os
from typing import TYPE_CHECKING, Any

from .._core.locks import ordered_lock
from .._core.threads import Job
from .lockorder import BACKLOGS

if TYPE_CHECKING:
    from .._transport.frames import Gather

__all__ = ["PIPE_ROOM", "Backlogs"]

PIPE_ROOM = 128 << 10  # a message this small fits in an idle pipe's buffer: writing it never waits


class Backlogs:
    """The messages waiting for each worker's pipe."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = ordered_lock("backlogs", BACKLOGS)
        self._queues: dict[int, collections.deque] = {}  # id(worker) -> messages not written yet

    def put(self, w: Any, data: bytes | memoryview | Gather) -> None:
        """Write `data` to worker `w`'s pipe now, or behind what waits for it, on another thread."""
        with self._lock:
            q = self._queues.get(id(w))
            if q is not None:
                q.append(data)  # behind what waits already: order kept
                return
            big = len(data) >= PIPE_ROOM
            if big:
                fresh = self._queues[id(w)] = collections.deque([data])
        if not big:
            write(w, data)
            return
        Job(lambda: self._drain(w, fresh), f"ezflow-write-{self._name}").start()

    def _drain(self, w: Any, q: collections.deque) -> None:
        while True:
            with self._lock:
                if not q:
                    del self._queues[id(w)]
                    return
                data = q.popleft()
            write(w, data)


def write(w: Any, data: bytes | memoryview | Gather) -> None:
    """Write one message to a worker's pipe; a dead worker is left to its sentinel."""
    try:
        with w.send_lock:  # not closed (and its descriptor reused) under this write
            if isinstance(data, (bytes, memoryview)):
                w.conn.send_bytes(data)
            else:
                _writev(w.conn.fileno(), data)
    except OSError:
        pass  # the worker died: the collector accounts for the piece


_IOV = 512  # parts per writev call (Linux takes up to 1024)


def _writev(fd: int, data: Gather) -> None:
    """Write a pickle's parts as one message in `Connection`'s format: its length, then the bytes."""
    n = data.nbytes
    head = n.to_bytes(4, "big") if n <= 0x7FFFFFFF else b"\xff\xff\xff\xff" + n.to_bytes(8, "big")
    views = [memoryview(head)] + [memoryview(p) for p in data.parts if p]
    i = 0
    while i < len(views):
        done = os.writev(fd, views[i : i + _IOV])
        while done:  # a blocking socket writes it all, unless a signal cut the call short
            first = len(views[i])
            if done < first:
                views[i] = views[i][done:]
                break
            done -= first
            i += 1
