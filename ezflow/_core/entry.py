"""Public entry points: what a user's ``except`` and traceback see, written once.

    user code -> @public entry (map, imap, Flow.collect / iter / start, Handle.wait, Executor)
                   refuse_in_bootstrap()      a spawn worker re-importing an unguarded script stops here
                   -> the engine              ... raises
                   surface(exc)               a worker that died re-importing the script -> StageError;
                                              ezflow's frames cut (EZFLOW_FULL_TRACEBACK=1 keeps them)
                 <- raise: the traceback ends at the user's call, one ezflow frame named after it

Iterators (``imap``, ``Flow.iter``) raise from their ``next()``: `public_iter`
does the same for them. The exception object is never replaced, except by
`translate`: type, ``__cause__`` and attributes are what the engine raised.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from .mainguard import refuse_in_bootstrap, translate
from .trim import full_traceback

__all__ = ["public", "public_iter", "surface"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def surface(exc: BaseException) -> BaseException:
    """Return the exception a public entry point raises for `exc`, its traceback cut to that entry point."""
    err = translate(exc)  # a worker that died re-importing the script: StageError
    if full_traceback() and err is exc:
        return err
    return err.with_traceback(None)


def public(fn: Callable[P, R]) -> Callable[P, R]:
    """Make `fn` a public entry point: main-guard check, error translation, a traceback that ends at the call."""

    @functools.wraps(fn)
    def entry(*args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True  # IPython and pytest hide this frame
        refuse_in_bootstrap()  # a worker re-importing a script without the main guard
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            err = surface(exc)
        raise err  # the error from your call (ezflow's own frames left out)

    # the one ezflow frame left in a user's traceback reads "in map", "in collect", ...
    names = {"co_name": fn.__name__}
    if sys.version_info >= (3, 11):
        names["co_qualname"] = fn.__qualname__
    entry.__code__ = entry.__code__.replace(**names)  # type: ignore[attr-defined]
    return entry


def public_iter(it: Iterator[T]) -> Iterator[T]:
    """Yield from `it`; an error it raises is surfaced as `public` does, and closing stops `it` now."""
    __tracebackhide__ = True  # IPython and pytest hide this frame
    try:
        while True:
            try:
                value = next(it)
            except StopIteration:
                return
            except BaseException as exc:
                err = surface(exc)
                break
            yield value
        raise err  # the error from your loop (ezflow's own frames left out)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()  # a break out of the loop stops the run now, as the engine's own iterator would

