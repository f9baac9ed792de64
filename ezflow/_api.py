"""The one-liners: `map` and `imap` are a one-stage `Flow`, not a second engine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, overload

from ._core.entry import public
from ._flow import Flow
from ._plan.callables import A, B, C, R, StageClass
from ._plan.spec import make_stage
from ._plan.stage_options import MapOptions, refuse_keywords, split_options
from ._plan.star import Zipped, starred

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from typing_extensions import Unpack

__all__ = ["imap", "map"]


def _flow(where: str, fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...], stage: dict) -> Flow:
    """The one-stage flow of a call; several iterables are zipped and spread into `fn` (as builtin map)."""
    if len(iterables) == 1:
        return Flow(iterables[0]).map(fn, **stage)
    if not iterables:
        raise TypeError(
            f"{where}() needs at least one iterable, as builtin map does: {where}(fn, data) or {where}(fn, xs, ys)"
        )
    for i, it in enumerate(iterables):
        if isinstance(it, (str, bytes)) or not hasattr(it, "__iter__"):
            raise TypeError(f"{where}() argument {i + 2} must be an iterable, got {type(it).__name__}")
    return Flow(Zipped(iterables))._with(starred(make_stage("map", fn, **stage)))


# Typed as builtin map is: one overload per number of iterables (a coroutine function's
# result is what it awaits to; a class stage's is what its instances return), then any number.
@overload
def map(fn: Callable[[A], Awaitable[R]], it: Iterable[A], /, **options: Unpack[MapOptions]) -> list[R]: ...
@overload
def map(fn: Callable[[A], R], it: Iterable[A], /, **options: Unpack[MapOptions]) -> list[R]: ...
@overload
def map(fn: type[StageClass[A, R]], it: Iterable[A], /, **options: Unpack[MapOptions]) -> list[R]: ...
@overload
def map(
    fn: Callable[..., Awaitable[R]], it1: Iterable[Any], it2: Iterable[Any], /,
    *rest: Iterable[Any], **options: Unpack[MapOptions]
) -> list[R]: ...
@overload
def map(fn: Callable[[A, B], R], it1: Iterable[A], it2: Iterable[B], /, **options: Unpack[MapOptions]) -> list[R]: ...
@overload
def map(
    fn: Callable[[A, B, C], R], it1: Iterable[A], it2: Iterable[B], it3: Iterable[C], /, **options: Unpack[MapOptions]
) -> list[R]: ...
@overload
def map(  # a class stage over several iterables: its instances' result type is not followed
    fn: type[Any], it1: Iterable[Any], it2: Iterable[Any], /, *rest: Iterable[Any], **options: Unpack[MapOptions]
) -> list[Any]: ...
@overload
def map(
    fn: Callable[..., R], it1: Iterable[Any], it2: Iterable[Any], it3: Iterable[Any], it4: Iterable[Any], /,
    *rest: Iterable[Any], **options: Unpack[MapOptions]
) -> list[R]: ...
@public
def map(fn: Callable[..., Any], /, *iterables: Iterable[Any], **options: Unpack[MapOptions]) -> list[Any]:
    """Apply `fn` to every item (of several iterables: every tuple) in parallel; return the results in order.

    Args:
        fn: the function (a lambda or a notebook function is fine), a class
            (one instance per worker) or a coroutine function (async mode).
        *iterables: the inputs; a generator is consumed lazily. With several,
            ``fn(a, b, ...)`` gets one item of each, as with builtin `map`,
            stopping at the shortest; a `Failure` or error then names the
            tuple of inputs.
        **options: declared once in `MapOptions` (the table in docs/map.md):
            the stage options of `Flow.map` (``workers``, ``mode`` "process" /
            "thread" / "async", ``ordered``, ``chunksize``, ``errors`` "raise" /
            "return" / "skip", ``retries``, ``item_timeout`` (seconds per
            attempt of one item; ``timeout=`` is refused: it only ever means
            how long a caller waits), ...) and the run's: ``progress`` (None:
            auto, True, False, "tqdm", "notebook" or an observer),
            ``checkpoint`` (a path such as "runs/thumbnails": results are
            stored as they arrive, and the same call again computes only the
            items without a stored result), ``checkpoint_match`` ("value" or
            "position"), ``checkpoint_failures``.

    Returns:
        The list of results (with `Failure` records where items failed, for
        ``errors="return"``).

    Raises:
        TaskError: an item failed (``errors="raise"``); it is also an instance
            of the original exception's class (``except ValueError`` works),
            names the item's index and value, and its ``__cause__`` is the
            original exception.
        TypeError: an unknown option, or none of the iterables.
    """
    refuse_keywords("ezflow.map", options, MapOptions)  # timeout= is item_timeout= now
    stage, run = split_options(dict(options))
    return _flow("ezflow.map", fn, iterables, stage).collect(**run)


@overload
def imap(fn: Callable[[A], Awaitable[R]], it: Iterable[A], /, **options: Unpack[MapOptions]) -> Iterator[R]: ...
@overload
def imap(fn: Callable[[A], R], it: Iterable[A], /, **options: Unpack[MapOptions]) -> Iterator[R]: ...
@overload
def imap(fn: type[StageClass[A, R]], it: Iterable[A], /, **options: Unpack[MapOptions]) -> Iterator[R]: ...
@overload
def imap(
    fn: Callable[..., Awaitable[R]], it1: Iterable[Any], it2: Iterable[Any], /,
    *rest: Iterable[Any], **options: Unpack[MapOptions]
) -> Iterator[R]: ...
@overload
def imap(
    fn: Callable[[A, B], R], it1: Iterable[A], it2: Iterable[B], /, **options: Unpack[MapOptions]
) -> Iterator[R]: ...
@overload
def imap(
    fn: Callable[[A, B, C], R], it1: Iterable[A], it2: Iterable[B], it3: Iterable[C], /, **options: Unpack[MapOptions]
) -> Iterator[R]: ...
@overload
def imap(  # a class stage over several iterables: its instances' result type is not followed
    fn: type[Any], it1: Iterable[Any], it2: Iterable[Any], /, *rest: Iterable[Any], **options: Unpack[MapOptions]
) -> Iterator[Any]: ...
@overload
def imap(
    fn: Callable[..., R], it1: Iterable[Any], it2: Iterable[Any], it3: Iterable[Any], it4: Iterable[Any], /,
    *rest: Iterable[Any], **options: Unpack[MapOptions]
) -> Iterator[R]: ...
@public
def imap(fn: Callable[..., Any], /, *iterables: Iterable[Any], **options: Unpack[MapOptions]) -> Iterator[Any]:
    """Like `map`, but return a lazy iterator with a bounded number of items in flight.

    Stopping early (``break``, ``itertools.islice``) stops the workers.
    Takes the same arguments as `map`.
    """
    refuse_keywords("ezflow.imap", options, MapOptions)
    stage, run = split_options(dict(options))
    return _flow("ezflow.imap", fn, iterables, stage).iter(**run)
