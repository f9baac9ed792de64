"""The one-liners: `map` and `imap` are a one-stage `Flow`, not a second engine."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

from ._core.entry import public
from ._flow import Flow
from ._plan.signature import refuse_keywords
from ._plan.spec import make_stage
from ._plan.star import Zipped, starred

__all__ = ["imap", "map"]

_builtin_map = map


_CHECKPOINT = ("checkpoint", "checkpoint_match", "checkpoint_failures")


def _options(scope: dict) -> dict:
    return {k: v for k, v in scope.items() if k not in ("fn", "iterables", "progress", "unknown")}


def _flow(where: str, fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...], opts: dict) -> Flow:
    """The one-stage flow of a call; several iterables are zipped and spread into `fn` (as builtin map)."""
    if len(iterables) == 1:
        return Flow(iterables[0]).map(fn, **opts)
    if not iterables:
        raise TypeError(
            f"{where}() needs at least one iterable, as builtin map does: {where}(fn, data) or {where}(fn, xs, ys)"
        )
    for i, it in enumerate(iterables):
        if isinstance(it, (str, bytes)) or not hasattr(it, "__iter__"):
            raise TypeError(f"{where}() argument {i + 2} must be an iterable, got {type(it).__name__}")
    return Flow(Zipped(iterables))._with(starred(make_stage("map", fn, **opts)))


@public
def map(
    fn: Callable[..., Any],
    /,
    *iterables: Iterable[Any],
    workers: int | None = None,
    mode: str | None = None,
    ordered: bool = True,
    chunksize: int | None = None,
    progress: Any = None,
    errors: str = "raise",
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    backoff: float = 0.0,
    item_timeout: float | None = None,
    rate: float | None = None,
    burst: int = 1,
    name: str | None = None,
    when: Callable[[Any], bool] | None = None,
    start_method: str | None = None,
    backend: Any = None,
    share_arrays: bool | int | None = None,
    max_tasks_per_worker: int | None = None,
    max_memory: int | str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_match: str | None = None,
    checkpoint_failures: bool | None = None,
    **unknown: NoReturn,
) -> list:
    """Apply `fn` to every item (of several iterables: every tuple) in parallel; return the results in order.

    Args:
        fn: the function (a lambda or a notebook function is fine), a class
            (one instance per worker) or a coroutine function (async mode).
        *iterables: the inputs; a generator is consumed lazily. With several,
            ``fn(a, b, ...)`` gets one item of each, as with builtin `map`,
            stopping at the shortest; a `Failure` or error then names the
            tuple of inputs.
        workers: parallel workers (default: one per CPU for processes).
        mode: "process" (default), "thread" or "async".
        ordered: results in input order (default) or as they finish.
        chunksize: items per message to a worker (default: adaptive).
        progress: None (auto), True, False, "tqdm", "notebook", or an observer.
        errors: "raise", "return" (a `Failure` in place of the value) or "skip".
        checkpoint: a path such as "runs/thumbnails" (file runs/thumbnails.sqlite):
            results are stored as they arrive, and the same call again
            computes only the items without a stored result.
        checkpoint_match: "value" (default: items by position and value, fn by
            its code and captured values) or "position" (by position only).
        checkpoint_failures: store failures too (``errors="return"``).
        item_timeout: seconds per attempt of one item (an item that runs
            longer fails with `ItemTimeout`); ``timeout=`` is refused: it only
            ever means how long a caller waits.
        Other options: as `Flow.map`.

    Returns:
        The list of results (with `Failure` records where items failed, for
        ``errors="return"``).

    Raises:
        TaskError: an item failed (``errors="raise"``); it is also an instance
            of the original exception's class (``except ValueError`` works),
            names the item's index and value, and its ``__cause__`` is the
            original exception.
    """
    refuse_keywords("ezflow.map", unknown, _KNOWN)  # timeout= is item_timeout= now
    opts = _options(locals())
    ck = {k: opts.pop(k) for k in _CHECKPOINT}
    return _flow("ezflow.map", fn, iterables, opts).collect(progress=progress, **ck)


@public
def imap(
    fn: Callable[..., Any],
    /,
    *iterables: Iterable[Any],
    workers: int | None = None,
    mode: str | None = None,
    ordered: bool = True,
    chunksize: int | None = None,
    progress: Any = None,
    errors: str = "raise",
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    backoff: float = 0.0,
    item_timeout: float | None = None,
    rate: float | None = None,
    burst: int = 1,
    name: str | None = None,
    when: Callable[[Any], bool] | None = None,
    start_method: str | None = None,
    backend: Any = None,
    share_arrays: bool | int | None = None,
    max_tasks_per_worker: int | None = None,
    max_memory: int | str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_match: str | None = None,
    checkpoint_failures: bool | None = None,
    **unknown: NoReturn,
) -> Iterator[Any]:
    """Like `map`, but return a lazy iterator with a bounded number of items in flight.

    Stopping early (``break``, ``itertools.islice``) stops the workers.
    Takes the same arguments as `map`.
    """
    refuse_keywords("ezflow.imap", unknown, _KNOWN)
    opts = _options(locals())
    ck = {k: opts.pop(k) for k in _CHECKPOINT}
    return _flow("ezflow.imap", fn, iterables, opts).iter(progress=progress, **ck)


_KNOWN = tuple(getattr(map, "__wrapped__", map).__kwdefaults__ or ())  # for "did you mean" (map is @public)
