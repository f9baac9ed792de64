"""Tracebacks that end at the user's call: ezflow's own frames are cut.

    user code -> ezflow.map / Flow.collect (public entry)   <- kept: the call they made
                   -> _engine / _executors / ...            <- cut (EZFLOW_FULL_TRACEBACK=1 keeps)
    worker: items.py _fast_map -> user fn                   <- remote text starts at the user's fn

IPython and pytest hide frames whose locals hold ``__tracebackhide__``; a
plain interpreter ignores it, so the public entry points re-raise with the
traceback cut to their own frame (``exc.with_traceback(None)``). Type,
``__cause__`` (the worker's exception and its traceback text) and every
attribute are those of the original exception object: it is the same object.
"""

from __future__ import annotations

import os
from types import TracebackType

__all__ = ["full_traceback", "skip_internal"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def full_traceback() -> bool:
    """True when ``EZFLOW_FULL_TRACEBACK`` asks for every frame (debugging ezflow)."""
    return os.environ.get("EZFLOW_FULL_TRACEBACK", "").strip() not in ("", "0")


def skip_internal(tb: TracebackType | None) -> TracebackType | None:
    """Drop the leading ezflow frames of a worker-side traceback (keeps all if none is the user's)."""
    if full_traceback():
        return tb
    start = tb
    while start is not None and os.path.abspath(start.tb_frame.f_code.co_filename).startswith(_PACKAGE):
        start = start.tb_next
    return start if start is not None else tb
