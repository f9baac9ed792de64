"""How functions and data cross a process boundary.

Functions: pickle by reference when that will work in any child (a function
of an importable module); dill by value for lambdas, closures, and anything
defined in ``__main__`` or a notebook cell, which a spawned or forkserver
child cannot import (loky's rule). ``recurse=True`` makes dill carry the
script globals such a function reads.

Data: pickle protocol 5; dill only for what pickle refuses (a lambda inside
an item, say). A one-byte header says which, so the reader never guesses.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

__all__ = ["dumps", "loads", "dumps_fn", "dumps_by_value"]

_PICKLE = b"P"
_DILL = b"D"


def _by_value(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "") or ""
    if module in ("__main__", "__mp_main__") or "<lambda>" in qualname or "<locals>" in qualname:
        return True
    # a bound method or partial of such a function
    inner = getattr(obj, "__func__", None) or getattr(obj, "func", None)
    return inner is not None and inner is not obj and _by_value(inner)


def dumps_fn(obj: Any) -> bytes:
    """Serialize a stage function or class so that any child can load it."""
    if not _by_value(obj):
        try:
            return _PICKLE + pickle.dumps(obj, protocol=5)
        except Exception:
            pass
    return dumps_by_value(obj)


def dumps_by_value(obj: Any) -> bytes:
    """Serialize with dill by value: for what only exists in this process."""
    try:
        return _DILL + _dill_dumps(obj, _shm_engaged())
    except Exception as exc:
        raise TypeError(
            f"cannot send {obj!r} to worker processes: {type(exc).__name__}: {exc}. "
            "Use mode='thread', or make what it refers to picklable."
        ) from exc


def dumps(obj: Any) -> bytes:
    """Serialize data with pickle, falling back to dill for what pickle refuses."""
    shm = _shm_engaged()
    try:
        return _PICKLE + (pickle.dumps(obj, protocol=5) if shm is None else shm.pickle_dumps(obj))
    except Exception:
        return _DILL + _dill_dumps(obj, shm)


def _shm_engaged() -> Any:
    # Shared arrays travel as references only through ezflow's own pickler (see _shm).
    shm = sys.modules.get("ezflow._shm")
    return shm if shm is not None and shm.engaged() else None


def _dill_dumps(obj: Any, shm: Any) -> bytes:
    if shm is not None:
        return shm.dill_dumps(obj)
    import dill

    return dill.dumps(obj, protocol=5, recurse=True)


def loads(data: bytes | memoryview) -> Any:
    """Load what `dumps` or `dumps_fn` wrote."""
    head = bytes(data[:1])
    body = memoryview(data)[1:]
    if head == _PICKLE:
        return pickle.loads(body)
    if head == _DILL:
        import dill

        return dill.loads(bytes(body))
    raise ValueError(f"unknown payload header {head!r}")
