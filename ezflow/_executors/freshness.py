"""Warm workers never run an older version of a module than the caller's.

    parent: fn from helper.py travels by name ("helper", "fn")
            version = (id(module), id(module.__spec__))   # importlib.reload makes a new spec
    warm pool workers imported helper at the version they first saw

Rule: before a process stage takes a warm pool, the version of the module its
function (or class) travels by name from is compared with the version seen
at the previous call. If the caller reloaded the module since
(``importlib.reload(helper)``, or deleted it from ``sys.modules`` and imported
it again), every idle warm pool is stopped and fresh workers import the
module as it is now on disk: the same code the caller just loaded.

A file edited but not reloaded changes nothing: the caller still runs the
old code and so do the warm workers. A worker started cold would import the
edited file, though, so ezflow warns once per edit that the file on disk is
newer than the module the caller runs (``importlib.reload`` it to use the edit).
Only the function's own module is tracked, not modules it imports in turn.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from typing import Any

from .pool import shutdown

__all__ = ["before_acquire"]

_lock = threading.Lock()
_versions: dict[str, tuple[int, int, float]] = {}  # module name -> (id(module), id(spec), mtime when seen)
_warned: dict[str, float] = {}


def _module_of(fn: Any) -> Any:
    name = getattr(fn, "__module__", None)
    if not name or name in ("__main__", "__mp_main__", "builtins"):
        return None  # goes by value, with its code: always current
    qualname = getattr(fn, "__qualname__", "")
    if "<lambda>" in qualname or "<locals>" in qualname:
        return None
    module = sys.modules.get(name)
    return module if getattr(module, "__file__", None) else None


def _mtime(module: Any) -> float:
    try:
        return os.stat(module.__file__).st_mtime
    except (OSError, TypeError):
        return 0.0


def before_acquire(fn: Any) -> None:
    """Stop the idle warm pools when `fn`'s module was reloaded since the last call."""
    module = _module_of(fn)
    if module is None:
        return
    name = module.__name__
    mtime = _mtime(module)
    now = (id(module), id(getattr(module, "__spec__", None)))
    with _lock:
        seen = _versions.get(name)
        reloaded = seen is not None and seen[:2] != now
        if seen is None or reloaded:
            _versions[name] = (*now, mtime)
        stale_file = seen is not None and not reloaded and mtime > seen[2] and _warned.get(name) != mtime
        if stale_file:
            _warned[name] = mtime
    if reloaded:
        shutdown()  # warm workers hold the old module; new ones import the reloaded file
    elif stale_file:
        warnings.warn(
            f"{module.__file__} changed on disk since it was imported here, but module {name!r} "
            f"was not reloaded: this call runs the code you imported (warm workers have it too); "
            f"importlib.reload({name}) to use the edit",
            RuntimeWarning,
            stacklevel=2,
        )
