"""Keys of a checkpoint: what a call computes, and which items it was given.

    stage specs --call_key--> one digest: every stage's kind, function and `when`
                              predicate, by code and by the values they read
    items[a:b]  --segment_key--> one digest of pickle.dumps(items, protocol=5)

A function is known by its code, not by where it lives: the bytecode, the
constants, the names it reads, its defaults, the contents of its closure
cells, and the value of every global it reads (functions among them
followed the same way). File names and line numbers are left out, so a
notebook function keeps its key across kernel restarts (the cell's file
name changes) and when cells above it grow. Modules count by name and
classes from installed packages by qualified name: editing a library is
not seen; editing a function, a helper it calls, a class defined in
``__main__`` or a global value it reads is.

Options that change how a stage runs but not what it returns (workers,
mode, errors, retries, item_timeout, rate, ordered, chunksize) are not part of
the key: raising ``workers`` or switching ``errors="raise"`` to
``"return"`` between runs keeps the stored results.
"""

from __future__ import annotations

import hashlib
import pickle
import types
from typing import Any

from .._plan.star import Star, StarClass

__all__ = ["KEY_BYTES", "call_key", "function_key", "segment_key"]

KEY_BYTES = 16
_DEPTH = 20  # globals followed this many functions deep (a cycle stops earlier)


def segment_key(items: list) -> bytes:
    """Return the digest of a list of consecutive items (pickle protocol 5).

    Raises:
        pickle.PicklingError, TypeError, AttributeError: an item does not pickle.
    """
    return hashlib.blake2b(pickle.dumps(items, protocol=5), digest_size=KEY_BYTES).digest()


def call_key(stages: list[tuple[str, Any, Any, int]]) -> str:
    """Return the hex key of a call: per stage (kind, fn, when, batch size)."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    for kind, fn, when, size in stages:
        h.update(f"stage:{kind}:{size}:".encode())
        _feed(h, fn, set(), 0, own=True)
        h.update(b"when:")
        _feed(h, when, set(), 0, own=True)
    return h.hexdigest()


def function_key(fn: Any) -> str:
    """Return the hex key of one callable (for messages and tests)."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    _feed(h, fn, set(), 0, own=True)
    return h.hexdigest()


def _feed(h: Any, obj: Any, seen: set[int], depth: int, own: bool = False) -> None:
    """Feed `obj` into hash `h`: by code for functions, by value for data."""
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if isinstance(obj, types.ModuleType):
        h.update(f"module:{obj.__name__};".encode())
        return
    if id(obj) in seen or depth > _DEPTH:
        h.update(f"seen:{_qualname(obj)};".encode())
        return
    if isinstance(obj, types.FunctionType):
        seen.add(id(obj))
        _feed_function(h, obj, seen, depth)
        return
    if isinstance(obj, types.MethodType):
        h.update(b"method:")
        _feed(h, obj.__func__, seen, depth + 1)
        _feed(h, obj.__self__, seen, depth + 1)
        return
    if isinstance(obj, type):
        seen.add(id(obj))
        h.update(f"class:{_qualname(obj)};".encode())
        if own or obj.__module__ == "__main__":
            for name, member in sorted(vars(obj).items()):
                if isinstance(member, (types.FunctionType, staticmethod, classmethod, property)):
                    h.update(f"member:{name}:".encode())
                    _feed(h, getattr(member, "__func__", getattr(member, "fget", member)), seen, depth + 1)
        return
    if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType, types.WrapperDescriptorType)):
        h.update(f"builtin:{_qualname(obj)};".encode())
        return
    func = getattr(obj, "func", None)
    if func is not None and callable(func) and hasattr(obj, "keywords"):  # functools.partial
        h.update(b"partial:")
        _feed(h, func, seen, depth + 1)
        _feed_value(h, (obj.args, obj.keywords))
        return
    if isinstance(obj, (Star, StarClass)):  # several iterables: the function they spread into
        h.update(f"star:{type(obj).__name__}:".encode())
        _feed(h, obj.__wrapped__, seen, depth + 1, own=own)
        return
    if callable(obj) and not isinstance(obj, type) and type(obj).__module__ == "__main__":
        seen.add(id(obj))
        _feed(h, type(obj), seen, depth + 1)  # a callable instance: its class's code and its state
    _feed_value(h, obj)


def _feed_function(h: Any, fn: types.FunctionType, seen: set[int], depth: int) -> None:
    h.update(f"function:{fn.__qualname__};".encode())
    code = fn.__code__
    _feed_code(h, code, fn.__doc__)
    _feed_value(h, (fn.__defaults__, fn.__kwdefaults__))
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell (a name bound later)
            h.update(b"cell:empty;")
            continue
        _feed(h, value, seen, depth + 1)
    scope = fn.__globals__
    for name in sorted(_names(code)):
        if name in scope:
            h.update(f"global:{name}=".encode())
            _feed(h, scope[name], seen, depth + 1)


def _feed_code(h: Any, code: types.CodeType, doc: Any = None) -> None:
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(h, const)
        elif doc is not None and const is doc:
            continue  # editing a docstring does not change results
        elif isinstance(const, frozenset):
            h.update(repr(sorted(map(repr, const))).encode())
        else:
            h.update(f"{type(const).__name__}:{const!r};".encode())


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _feed_value(h: Any, value: Any) -> None:
    try:
        h.update(b"pickle:" + pickle.dumps(value, protocol=5))
        return
    except Exception:
        pass
    try:
        import dill

        h.update(b"dill:" + dill.dumps(value, recurse=True))
        return
    except Exception:
        pass
    text = repr(value)
    if " at 0x" in text:  # a default repr names an address, which changes every run
        text = f"<{_qualname(type(value))}>"
    h.update(f"repr:{text};".encode())


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__qualname__
    return f"{module}.{name}" if module else str(name)
