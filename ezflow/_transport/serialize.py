"""How functions and data cross a process boundary.

Functions: pickle by reference when that will work in any child (a function
of an importable module); dill by value for lambdas, closures, and anything
defined in ``__main__`` or a notebook cell, which a spawned or forkserver
child cannot import (loky's rule). ``recurse=True`` makes dill carry the
script globals such a function reads.

Data: pickle protocol 5; dill only for what pickle refuses (a lambda inside
an item, say). A one-byte header says which, so the reader never guesses.
Inside ezflow's process transport, pickle-5 out-of-band buffers travel
through shared memory: the header then says so and a short list of their
references comes first.

    P <pickle>                 D <dill pickle>
    B <n: 4 bytes> <n bytes: pickled (references, unshared)> P|D <pickle>
"""

from __future__ import annotations

import io
import pickle
import sys
from functools import partial
from types import FunctionType
from typing import Any, cast

from .byvalue import dill_pickler
from .frames import Gather, MainScan

__all__ = ["dumps", "dumps_by_value", "dumps_fn", "dumps_parts", "dumps_view", "loads"]

_PICKLE = b"P"
_DILL = b"D"
_BUFFERS = b"B"  # out-of-band buffers in shared memory, then a P or D payload


def _by_value(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "") or ""
    if module in ("__main__", "__mp_main__") or "<lambda>" in qualname or "<locals>" in qualname:
        return True
    if module is None and isinstance(obj, FunctionType):
        # made by exec() without a __name__: pickle would look it up in __main__ by name, and a warm
        # worker's copy of __main__ may hold another function of that name
        return True
    # a bound method or partial of such a function
    inner = getattr(obj, "__func__", None) or getattr(obj, "func", None)
    if inner is not None and inner is not obj and _by_value(inner):
        return True
    # a partial that carries such a function (ezflow.apply's per-chunk work wraps the user's)
    if isinstance(obj, partial):
        return any(callable(a) and a is not obj and _by_value(a) for a in (*obj.args, *obj.keywords.values()))
    # consecutive stages fused into one call (plan.chain.Chain): by value if any of them is
    if getattr(type(obj), "__ezflow_parts__", None) is None:
        return False
    return any(_by_value(f) for f in obj.__ezflow_parts__)


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
        return bytes(cast("bytes | memoryview", _headed(_dill_dumps(obj, _shm_engaged()))))
    except Exception as exc:
        raise TypeError(
            f"cannot send {obj!r} to worker processes: {type(exc).__name__}: {exc}. "
            "Use mode='thread', or make what it refers to picklable."
        ) from exc


def dumps(obj: Any, *, to_worker: bool = False) -> bytes:
    """Serialize data with pickle, falling back to dill for what pickle refuses.

    ``to_worker``: the receiver is a worker, which may not have what the
    caller's script or notebook defined (a class made in a cell after the
    warm workers started, or any under spawn and forkserver). Data that
    names something of ``__main__`` then goes by value, with dill.
    """
    data = dumps_view(obj, to_worker=to_worker)
    return data if type(data) is bytes else bytes(data)


def dumps_view(obj: Any, *, to_worker: bool = False) -> bytes | memoryview:
    """`dumps`, as a buffer to write to a pipe: the pickle of a big item is not copied again.

    The header is written before the pickle, into the same buffer, as
    multiprocessing's own pickler does: a 20 MB item costs one copy, not
    three (each a fresh 20 MB of pages to fault in, ~10 ms).
    """
    return cast("bytes | memoryview", _dumps(obj, to_worker, gather=False))


def dumps_parts(obj: Any, *, to_worker: bool = False) -> bytes | memoryview | Gather:
    """`dumps_view` with no copy at all: the pickle as the pickler wrote it (`frames.Gather`), when it has parts.

    For a writer that writes parts (a task to a worker: `backlog.write`).
    """
    return _dumps(obj, to_worker, gather=True)


def _dumps(obj: Any, to_worker: bool, gather: bool) -> bytes | memoryview | Gather:
    shm = _shm_engaged()
    try:
        if shm is None:
            data, names_main = _pickle_headed(obj, gather)
        else:
            data = shm.pickle_dumps(obj, head=_PICKLE, gather=gather)
            names_main = data.names_main
    except Exception:
        return _headed(_dill_dumps(obj, shm))
    if to_worker and names_main:
        first = shm.last_attempt() if shm is not None else None
        try:
            by_value = _dill_dumps(obj, shm)
        except Exception:
            return _headed(data)  # dill cannot either: the worker reports what it cannot load
        if shm is not None:
            shm.drop_attempt(first)  # the segments of the pickle attempt go unused
        return _headed(by_value)
    return _headed(data)


def _pickle_headed(obj: Any, gather: bool = False) -> tuple[memoryview | Gather, bool]:
    """The pickle after its header, and whether it may name something of ``__main__``."""
    buf = Gather() if gather else MainScan()
    buf.write(_PICKLE)
    pickle.Pickler(buf, protocol=5).dump(obj)
    return buf.pickled(), buf.names_main


def _headed(data: Any) -> bytes | memoryview | Gather:
    """A pickle written after its P or D header: itself, or after the references of its out-of-band buffers."""
    if type(data) is memoryview or type(data) is Gather:
        return data
    if not data.buffers and data.unshared is None:
        return data.data
    refs = pickle.dumps((data.buffers, data.unshared), protocol=5)
    head = b"".join((_BUFFERS, len(refs).to_bytes(4, "little"), refs))
    if type(data.data) is Gather:
        data.data.prepend(head)
        return data.data
    return b"".join((head, data.data))


def _shm_engaged() -> Any:
    # Shared arrays travel as references only through ezflow's own pickler, inside its
    # scopes. Imported here, not at the top: shared memory loads on first use, and
    # `import ezflow` stays light.
    from . import pickler

    return pickler if pickler.engaged() else None


def _dill_dumps(obj: Any, shm: Any) -> Any:
    if shm is not None:
        return shm.dill_dumps(obj, head=_DILL)
    buf = io.BytesIO()
    buf.write(_DILL)
    dill_pickler(buf).dump(obj)
    return buf.getbuffer()


def loads(data: bytes | memoryview) -> Any:
    """Load what `dumps` or `dumps_fn` wrote."""
    head = bytes(data[:1])
    body = memoryview(data)[1:]
    buffers = None
    if head == _BUFFERS:
        n = int.from_bytes(body[:4], "little")
        refs, unshared = pickle.loads(body[4 : 4 + n])
        from .pickler import buffers_of  # shared memory: loads only where it is used

        buffers = buffers_of(refs, unshared)
        head, body = bytes(body[4 + n : 5 + n]), body[5 + n :]
    if head == _PICKLE:
        return pickle.loads(body, buffers=buffers)
    if head == _DILL:
        return _dill_loads(bytes(body), buffers)
    raise ValueError(f"unknown payload header {head!r}")


def _dill_loads(data: bytes, buffers: Any = None) -> Any:
    import io

    import dill

    class Unpickler(dill.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "dill._dill" and name == "_create_type":
                return _create_type
            return super().find_class(module, name)

    return Unpickler(io.BytesIO(data), buffers=buffers).load()


def _create_type(typeobj: Any, *args: Any) -> Any:
    # A class of the script or notebook that came by value is the class of that
    # name here, when there is one: isinstance() must hold for what a worker returns.
    if len(args) == 3 and isinstance(args[2], dict) and args[2].get("__module__") in ("__main__", "__mp_main__"):
        name, ns = args[0], args[2]
        found: Any = sys.modules.get("__main__")
        for part in ns.get("__qualname__", name).split("."):
            found = getattr(found, part, None)
        if isinstance(found, type) and found.__module__ in ("__main__", "__mp_main__") and found.__name__ == name:
            return found
    return typeobj(*args)
