"""A worker's reading end of its pipe: every message is read into one buffer, kept for the next.

``Connection.recv_bytes`` reads a message in pieces of what the pipe holds
(about 200 KiB here), each into a fresh buffer the size of the rest, and
appends them to a growing ``BytesIO``: a task carrying 20 MB of pickled
bytes or strings touched 40-130 MB of fresh pages in the worker, 10-25 ms of
page faults an item, on the worker's own time. Read straight into a kept
buffer, the next big task touches none. The format on the pipe is
``Connection``'s (a 4-byte big-endian length, or -1 and then 8 bytes), so the
parent writes with ``send_bytes`` as before.

A message is a view into the buffer, valid until the next `recv`: the
worker unpickles it at once (unpickling copies everything out of it) and
lets go of it before reading on. After a second of nothing to do, a buffer
bigger than `KEEP` is let go (`drop`): an idle worker holds no more than that.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["KEEP", "Inbox"]

KEEP = 1 << 20


class Inbox:
    """Read the messages of one connection into a buffer that is kept between them."""

    __slots__ = ("_buf", "_fd", "_head")

    def __init__(self, conn: Any) -> None:
        self._fd = conn.fileno()
        self._buf = bytearray(KEEP)
        self._head = bytearray(8)

    def recv(self) -> memoryview:
        """Return the next message: a view valid until the next call.

        Raises:
            EOFError: the other end closed the pipe.
        """
        head = memoryview(self._head)
        self._fill(head[:4])
        size = int.from_bytes(head[:4], "big", signed=True)
        if size == -1:  # over 2 GiB: the length follows in 8 bytes
            self._fill(head)
            size = int.from_bytes(head, "big")
        if size > len(self._buf):
            # a new buffer, not a resize: a view of the last message may still be alive (a traceback);
            # an eighth more: the next task of a kind is often a few bytes longer (its piece id, its values)
            self._buf = bytearray(size + (size >> 3))
        view = memoryview(self._buf)[:size]
        self._fill(view)
        return view

    def drop(self) -> None:
        """Let go of a big buffer (the worker is idle)."""
        if len(self._buf) > KEEP:
            self._buf = bytearray(KEEP)

    def _fill(self, view: memoryview) -> None:
        got, n = 0, len(view)
        while got < n:
            k = os.readv(self._fd, [view[got:]])
            if k == 0:
                raise EOFError
            got += k
