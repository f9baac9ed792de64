"""Keywords the public stage signatures refuse, with the fix in the message.

    ezflow.map(fn, data, timeout=5)   -->  TypeError: ... now item_timeout= ...
    Flow(data).map(fn, worker=2)      -->  TypeError: ... did you mean workers=?

``timeout`` only ever means how long a caller waits (``handle.wait``, a
partial batch, the start-up wait), as in the standard library; the limit on
one item is ``item_timeout``. The old per-item spelling fails loudly rather
than being taken as something else.

Each public stage signature ends in ``**unknown: NoReturn``: a type checker
flags any keyword it does not declare, and at run time the function's first
line hands what landed there to `refuse_keywords` (no wrapper: no extra frame
in a user's traceback).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["RENAMED", "refuse_keywords"]

# old keyword -> what to say instead
RENAMED = {
    "timeout": (
        "the per-item limit is now item_timeout= (seconds per attempt of one item); "
        "timeout= only ever means how long a caller waits (handle.wait, batch, start)"
    ),
}


def refuse_keywords(where: str, given: dict[str, Any], known: Iterable[str] = ()) -> None:
    """Raise TypeError for keywords `where` does not take, naming the right one.

    Args:
        where: the public name, e.g. "ezflow.map".
        given: the keywords that matched no parameter.
        known: the parameters it does take (for a "did you mean").
    """
    for key in given:
        if key in RENAMED:
            raise TypeError(f"{where}() got {key!r}: {RENAMED[key]}")
        import difflib  # only on this error path: it is not needed to start

        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f"; did you mean {close[0]}=?" if close else ""
        raise TypeError(f"{where}() got an unexpected keyword argument {key!r}{hint}")

