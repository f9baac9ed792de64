"""What a Q carries, and the frames a worker and the broker exchange for it.

    frame = header (op, request id, queue id) + body (a pickled Msg, a timeout, an error)
    worker -> broker: PUT, GET, SIZE, DONE    broker -> worker: ITEM, EMPTY, ERROR
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Literal

QKind = Literal["process", "thread"]


_KINDS = ("process", "thread")


@dataclass
class Msg:
    """A message on a `Q`.

    Attributes:
        data: the payload.
        kind: an optional tag; the kind ``"END"`` marks the end of a queue.
        order: an optional position, used by `Q.sorted`.
    """

    data: Any = None
    kind: str = ""
    order: int = 0


END_MSG: Msg = Msg(kind="END")
"""The message that ends iteration over a `Q` (any message of kind "END" does)."""


# header: op, request id, queue id; then the op's body (a pickled Msg, ...)
_HEAD = struct.Struct("!BqQ")


_TIMEOUT = struct.Struct("!d")  # GET body: seconds, < 0 = wait forever


_PUT, _GET, _DONE, _SIZE = 1, 2, 3, 4  # worker -> broker


_COUNT = struct.Struct("!Q")  # SIZE reply body (in an ITEM frame): messages waiting


_ITEM, _EMPTY, _ERROR = 11, 12, 13  # broker -> worker


def _frame(op: int, req: int, qid: int, body: bytes | memoryview = b"") -> bytes:
    return b"".join((_HEAD.pack(op, req, qid), body))
