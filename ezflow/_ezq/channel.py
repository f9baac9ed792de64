"""The owner's end of one worker process's pipe: what the broker reads from and the waiting GETs answer through.

Below both state.py (a waiting GET names its channel) and broker.py (which serves them).
"""

from __future__ import annotations

import threading
from multiprocessing.connection import Connection
from typing import Any


class _Channel:
    """The owner's end of one worker process's pipe."""

    def __init__(self, conn: Connection, proc: Any) -> None:
        self.conn = conn
        self.proc = proc
        self.sentinel: int = proc.sentinel
        self.eof = False  # nothing more to read
        self.closed = False  # nothing more to send (DONE came, or the pipe broke)
        self.done = False  # DONE came
        self.error: bytes = b""  # DONE's body: the packed exception, if any
        self.finished = threading.Event()  # the process exited and all it sent is in
