"""Where a pickle is written: a buffer, or the pickler's own writes kept as they came.

The pickler (protocol 4+) writes its opcodes in frames of about 64 KiB, and
the payload of a big bytes or str on its own, straight from the object:

    MainScan  a BytesIO: one buffer (results, setups, checkpoints)
    Gather    the writes themselves, frames and payloads (a task to a worker):
              written to the pipe with writev, never joined. A 20 MB bytes
              item is not copied in this process at all; a list of strings
              costs its frames, small blocks the allocator reuses, where one
              big buffer is fresh pages (page faults) for every item.

Both note whether the pickle may name something of ``__main__``: a worker
that did not see the definition (spawn, forkserver, a class made after the
workers started) cannot load that, and it goes by value instead. A module
name is always inside a frame, so a big item's payloads (~6 ms a 20 MB
bytes) are not searched; a payload that holds the text costs a false
alarm (speed, never a wrong result).
"""

from __future__ import annotations

import io
import re
from typing import Any

__all__ = ["Gather", "MainScan"]

_MAIN_IN = re.compile(b"__main__")  # a regex reads a frame without a copy, and twice as fast as bytes.find
_PAYLOAD = 256 << 10  # a write this big is a payload: frames are < 128 KiB (64 KiB + one opcode below that)


def _names_main(data: Any) -> bool:
    return len(data) < _PAYLOAD and _MAIN_IN.search(data) is not None


class MainScan(io.BytesIO):
    """A pickle's buffer that notes whether the pickle may name anything of ``__main__``."""

    names_main = False

    def write(self, data: Any, /) -> int:
        if not self.names_main and _names_main(data):
            self.names_main = True
        return super().write(data)

    def pickled(self) -> memoryview:
        """The pickle: a view of the buffer, not getvalue()'s copy (a big in-band item is not copied again)."""
        return self.getbuffer()


class Gather:
    """A pickle as the pickler wrote it: its parts in order, ``len()`` their bytes (written with `writev`)."""

    __slots__ = ("names_main", "nbytes", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.nbytes = 0
        self.names_main = False

    def write(self, data: Any, /) -> int:
        if not self.names_main and _names_main(data):
            self.names_main = True
        # a bytes is immutable: kept by reference; anything else (a bytearray payload) is copied now
        self.parts.append(data if type(data) is bytes else bytes(data))
        n = len(data)
        self.nbytes += n
        return n

    def pickled(self) -> Gather:
        """The pickle: these parts."""
        return self

    def prepend(self, data: bytes) -> None:
        """Put `data` before the rest (a header)."""
        self.parts.insert(0, data)
        self.nbytes += len(data)

    def __len__(self) -> int:
        return self.nbytes
