"""The one-liners: `map` and `imap` are a one-stage `Flow`, not a second engine."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from ._flow import Flow

__all__ = ["map", "imap"]

_builtin_map = map


def _flow(fn: Callable[[Any], Any], iterable: Iterable[Any], opts: dict) -> Flow:
    return Flow(iterable).map(fn, **opts)


def map(  # noqa: A001 - the point is to read like the builtin
    fn: Callable[[Any], Any],
    iterable: Iterable[Any],
    /,
    *,
    workers: int | None = None,
    mode: str | None = None,
    ordered: bool = True,
    chunksize: int | None = None,
    progress: Any = None,
    errors: str = "raise",
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    backoff: float = 0.0,
    timeout: float | None = None,
    rate: float | None = None,
    burst: int = 1,
    name: str | None = None,
    when: Callable[[Any], bool] | None = None,
    start_method: str | None = None,
    backend: Any = None,
    share_arrays: bool | int | None = None,
    max_tasks_per_worker: int | None = None,
    max_memory: int | str | None = None,
) -> list:
    """Apply `fn` to every item in parallel and return the results in order.

    Args:
        fn: the function (a lambda or a notebook function is fine), a class
            (one instance per worker) or a coroutine function (async mode).
        iterable: the inputs; a generator is consumed lazily.
        workers: parallel workers (default: one per CPU for processes).
        mode: "process" (default), "thread" or "async".
        ordered: results in input order (default) or as they finish.
        chunksize: items per message to a worker (default: adaptive).
        progress: None (auto), True, False, "tqdm", "notebook", or an observer.
        errors: "raise", "return" (a `Failure` in place of the value) or "skip".
        Other options: as `Flow.map`.

    Returns:
        The list of results (with `Failure` records where items failed, for
        ``errors="return"``).

    Raises:
        TaskError: an item failed (``errors="raise"``); it names the item's
            index and value, and its ``__cause__`` is the original exception.
    """
    opts = {k: v for k, v in locals().items() if k not in ("fn", "iterable", "progress")}
    return _flow(fn, iterable, opts).collect(progress=progress)


def imap(
    fn: Callable[[Any], Any],
    iterable: Iterable[Any],
    /,
    *,
    workers: int | None = None,
    mode: str | None = None,
    ordered: bool = True,
    chunksize: int | None = None,
    progress: Any = None,
    errors: str = "raise",
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    backoff: float = 0.0,
    timeout: float | None = None,
    rate: float | None = None,
    burst: int = 1,
    name: str | None = None,
    when: Callable[[Any], bool] | None = None,
    start_method: str | None = None,
    backend: Any = None,
    share_arrays: bool | int | None = None,
    max_tasks_per_worker: int | None = None,
    max_memory: int | str | None = None,
) -> Iterator[Any]:
    """Like `map`, but return a lazy iterator with a bounded number of items in flight.

    Stopping early (``break``, ``itertools.islice``) stops the workers.
    Takes the same arguments as `map`.
    """
    opts = {k: v for k, v in locals().items() if k not in ("fn", "iterable", "progress")}
    return _flow(fn, iterable, opts).iter(progress=progress)
