"""Records (named fields, defaults, value equality, optionally frozen) without `dataclasses`.

`dataclasses` imports `inspect` (and with it `ast` and `dis`) and compiles
each class's methods with `exec`: about 12 ms of ``import ezflow``, a third
of it, where `multiprocessing.Pool` starts in 15. The few records on the
start-up path (the stage plan, the stats model) need only this much.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - the decorator only informs type checkers

    def dataclass_transform(**_: Any) -> Callable[[T], T]:
        return lambda f: f

__all__ = ["Factory", "record", "replace"]



class Factory:
    """A default made anew for each record (like ``field(default_factory=...)``)."""

    __slots__ = ("make",)

    # `factory`: the name type checkers read on a field specifier (dataclass_transform)
    def __init__(self, factory: Callable[[], Any]) -> None:
        self.make = factory


@dataclass_transform(field_specifiers=(Factory,))
def record(*, frozen: bool = False) -> Callable[[type[T]], type[T]]:
    """Give a class with annotated fields an ``__init__``, ``__repr__`` and ``__eq__``.

    Fields are the class's own annotations, in order; a class attribute is
    the field's default (a `Factory` makes a fresh one per record). A frozen
    record refuses attribute assignment and is hashable by value. Methods
    the class defines itself are kept.
    """

    def wrap(cls: type[T]) -> type[T]:
        names = tuple(cls.__dict__.get("__annotations__", {}))
        defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
        title = cls.__qualname__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            if len(args) > len(names):
                raise TypeError(f"{title}() takes {len(names)} arguments, got {len(args)}")
            values = dict(zip(names, args))
            for key, value in kwargs.items():
                if key not in names:
                    raise TypeError(f"{title}() got an unexpected keyword argument {key!r}")
                if key in values:
                    raise TypeError(f"{title}() got multiple values for argument {key!r}")
                values[key] = value
            for name in names:
                if name not in values:
                    if name not in defaults:
                        raise TypeError(f"{title}() missing required argument {name!r}")
                    default = defaults[name]
                    values[name] = default.make() if isinstance(default, Factory) else default
            self.__dict__.update(values)

        def __repr__(self: Any) -> str:
            fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{title}({fields})"

        def __eq__(self: Any, other: Any) -> Any:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise AttributeError(f"cannot assign to field {name!r}: {title} is frozen")

        def __delattr__(self: Any, name: str) -> None:
            raise AttributeError(f"cannot delete field {name!r}: {title} is frozen")

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, n) for n in names))

        methods: dict[str, Any] = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
        if frozen:
            methods.update(__setattr__=__setattr__, __delattr__=__delattr__, __hash__=__hash__)
        for key, method in methods.items():
            if key not in cls.__dict__:
                method.__qualname__ = f"{title}.{key}"
                setattr(cls, key, method)
        if not frozen:
            cls.__hash__ = None  # type: ignore[assignment]  # equal by value and mutable: unhashable
        for name, default in defaults.items():
            if isinstance(default, Factory):
                delattr(cls, name)  # the class attribute is not a value
        cls._fields = names  # type: ignore[attr-defined]
        cls.__match_args__ = names  # type: ignore[attr-defined,misc]
        return cls

    return wrap


def replace(obj: T, **changes: Any) -> T:
    """Return a copy of a record with some fields changed."""
    values = {n: getattr(obj, n) for n in obj._fields}  # type: ignore[attr-defined]
    values.update(changes)
    return type(obj)(**values)
