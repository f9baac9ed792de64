"""dill by value: the pickler for what only exists in this process (a lambda, a closure, a cell's class).

serialize.py (which encoding, and the header that says which) and pickler.py
(shared arrays as references, by value too) both build on this; it imports
neither of them.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import Any

__all__ = ["dill_pickler"]

def dill_pickler(file: Any, reducer: Any = None, buffer_callback: Any = None) -> Any:
    """A dill pickler by value (recurse=True) that takes modules by name.

    dill would copy the namespace of any module outside site-packages (an
    editable install, a helper module next to the notebook) into the
    pickle, and fail on what it holds (locks, thread-locals); a worker
    imports such a module instead, as it imports any other. ``reducer``
    is a further ``reducer_override`` to consult; ``buffer_callback`` is
    pickle's (out-of-band buffers).
    """
    import dill

    def override(obj: Any) -> Any:
        if type(obj) is ModuleType and _importable(obj):
            return (import_module, (obj.__name__,))
        return NotImplemented if reducer is None else reducer(obj)

    # an instance attribute, not a subclass: dill tells its own picklers by module name
    p = dill.Pickler(file, 5, recurse=True, buffer_callback=buffer_callback)
    p.reducer_override = override
    return p


def _importable(module: ModuleType) -> bool:
    name = module.__name__
    return (
        name not in ("__main__", "__mp_main__")
        and sys.modules.get(name) is module
        and getattr(module, "__spec__", None) is not None
    )
