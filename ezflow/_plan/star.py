"""Several iterables, as builtin `map` takes them: zipped into tuples, spread into the call.

    ezflow.map(add, xs, ys)  -->  source Zipped(xs, ys): (x0, y0), (x1, y1), ... (stops at the shortest)
                                  stage fn Star(add):    each tuple t --> add(*t)

The engine sees one item per input as always: a tuple. So a `Failure`, a
`TaskError` and a checkpoint name the tuple of inputs, and nothing below the
plan knows there were several iterables. `Star` copies the function's name,
module and qualified name (``functools.update_wrapper``): it is pickled by
value exactly when the function would be, warm workers notice a reloaded
module, and a stage is named after the function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import update_wrapper
from typing import Any

from .._core.record import replace
from .spec import StageSpec

__all__ = ["Star", "StarClass", "Zipped", "starred"]


class Star:
    """Call ``fn(*item)``: the item is the tuple of one input from each iterable."""

    __wrapped__: Callable[..., Any]  # set by update_wrapper: the user's function

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        update_wrapper(self, fn, updated=())

    def __call__(self, item: tuple) -> Any:
        return self.fn(*item)

    def close(self) -> None:
        """Close the class instance this wraps, as a class stage's ``close()`` is."""
        close = getattr(self.fn, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        return repr(self.fn)


class StarClass:
    """A class stage over several iterables: built once per worker, then ``instance(*item)``."""

    __wrapped__: type  # set by update_wrapper: the user's class

    def __init__(self, cls: type) -> None:
        self.cls = cls
        update_wrapper(self, cls, updated=())

    def __call__(self) -> Star:
        instance = self.cls()
        if not callable(instance):
            raise TypeError(f"instances of {self.cls.__name__} are not callable: define __call__(self, a, b, ...)")
        return Star(instance)

    def __repr__(self) -> str:
        return repr(self.cls)


class Zipped:
    """The source of several iterables: their tuples, up to the shortest (as `zip`)."""

    def __init__(self, iterables: tuple[Iterable[Any], ...]) -> None:
        self.iterables = iterables

    def __iter__(self) -> Iterator[tuple]:
        return zip(*self.iterables)

    def __len__(self) -> int:
        # sized only when every iterable is: then the progress bar and chunking know the total
        return min(len(it) for it in self.iterables)  # type: ignore[arg-type]


def starred(spec: StageSpec) -> StageSpec:
    """Return `spec` with its function and ``when`` called with one argument per iterable.

    The spec was validated (mode, name, coroutine, class) on the user's own
    function; only what a worker calls changes.
    """
    fn: Any = StarClass(spec.fn) if spec.is_class else Star(spec.fn)
    when = Star(spec.when) if spec.when is not None else None
    return replace(spec, fn=fn, when=when)
