"""A worker's pipe read outside the collector's loop: the setup's answer, a class's close(), what a dead worker left.

    setup()         await_ready(w)   a class stage is built in w: Ready, SetupFailed, or None (w died)
    end / retiring  await_closed(w)  the stage's close() ran in w: Closed, or None (w died or took 30 s)
    collector       left_in_pipe(w)  a dead worker's results still in its pipe, one by one
"""

from __future__ import annotations

from collections.abc import Iterator
from multiprocessing.connection import wait
from typing import Any

from .._transport.serialize import loads
from .pool import WorkerProc
from .wire import Closed, Ready, SetupFailed, decode

__all__ = ["await_closed", "await_ready", "left_in_pipe"]


def await_ready(w: WorkerProc) -> Ready | SetupFailed | None:
    """Wait for `w`'s answer to a class stage's setup; None: it died first (it is joined, up to 1 s)."""
    while True:
        ready = wait([w.conn, w.proc.sentinel])
        if w.conn in ready:
            try:
                msg = decode(loads(w.conn.recv_bytes()))
            except (EOFError, OSError):
                msg = None
            if type(msg) is Ready or type(msg) is SetupFailed:
                return msg
            if msg is not None:
                continue
        w.proc.join(1)
        return None


def await_closed(w: WorkerProc) -> Closed | None:
    """Wait for `w` to close the stage after a teardown; None: it died, or did not answer within 30 s."""
    while True:
        ready = wait([w.conn, w.proc.sentinel], 30)
        if w.conn not in ready:
            return None
        try:
            msg = decode(loads(w.conn.recv_bytes()))
        except (EOFError, OSError):
            return None
        if type(msg) is Closed:
            return msg


def left_in_pipe(w: WorkerProc) -> Iterator[Any]:
    """Yield the messages a dead worker sent before it died, read one at a time as they are handled."""
    while True:
        try:
            if not w.conn.poll():
                return
            msg = decode(loads(w.conn.recv_bytes()))
        except (EOFError, OSError):
            return
        yield msg
