"""Big task messages go through a shared-memory segment; the pipe carries only its name.

    parent (link.StageLink.dumps_task)                      worker (serialize.loads)
    pickled task >= SPILL_BYTES --spill--> segment <---------- unspill: read it, load it
    pipe: b"S" + name + size (a few dozen bytes) ---------->   (the segment is the parent's: it is
                                                                pooled again once the piece is answered)

A worker reads its next task only when it is done with the current one, so
a message larger than the pipe's buffer (~208 KiB here) blocks whoever
writes it: the parent's sender, and every other worker waiting for work
behind it. Pickled items that are not arrays (bytes, strings, records)
have no other way around the pipe. Spilled, the message costs the parent
one copy into a segment (reused from the pool, its pages already there)
and the worker one copy out, instead of the pipe's two copies through the
kernel in small pieces, and the sender never waits on a busy worker.
"""

from __future__ import annotations

import os
from typing import Any

SPILL_BYTES = 128 << 10  # under the pipe's buffer: a task message the sender writes never waits for its reader
SPILLED = b"S"  # serialize's header of a spilled message


def spill(data: bytes) -> tuple[bytes, str] | None:
    """Write a pickled message into a segment of ours; return (what the pipe carries, the segment's name).

    None when no segment can be had now (the message then goes by the pipe).
    """
    from .segments import _Unavailable, _write
    from .share import _alloc_here, _forget_alloc

    try:
        name, _size, fd, role = _alloc_here(len(data))
    except (_Unavailable, OSError):
        return None
    try:
        _write(fd, memoryview(data), name)
    except (_Unavailable, OSError):
        _forget_alloc(name, role)
        return None
    finally:
        os.close(fd)
    return SPILLED + f"{name}:{len(data)}".encode(), name


def unspill(body: Any) -> bytearray:
    """Read the message a spilled one names (`body`: what follows its header)."""
    from .segments import _posixshmem

    name, _, size = bytes(body).decode().partition(":")
    n = int(size)
    buf = bytearray(n)
    view = memoryview(buf)
    fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, 0o600)
    try:
        done = 0
        while done < n:
            got = os.preadv(fd, [view[done:]], done)
            if got <= 0:
                raise EOFError(f"segment {name} holds {done} of the task's {n} bytes")
            done += got
    finally:
        os.close(fd)
    return buf
