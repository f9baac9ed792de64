"""`Flow`: the chainable, immutable builder of multi-stage pipelines.

    Flow(source).map(f).filter(p).batch(32).map(g)   # builds a plan, runs nothing
        .collect() / iteration / .start()            # each makes a fresh `Run`

Every builder method validates its options and returns a new Flow; a Flow
can be run many times (a generator source, of course, only yields once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, overload

from ._core.entry import public, public_iter
from ._core.record import replace
from ._core.stats import FlowStats
from ._engine.run import Run, Runner
from ._plan.callables import R, StageClass, T_co, U
from ._plan.spec import StageSpec, make_batch, make_stage, make_unbatch
from ._plan.stage_options import RunOptions, StageOptions, refuse_keywords

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from typing_extensions import Unpack

    from ._engine.handle import Handle
    from ._ezq.queue import Q

__all__ = ["Flow"]


def _observer(progress: Any) -> Any:
    if progress is False:
        return None
    try:
        from ._views.choose import make_observer
    except ImportError:  # the progress views are optional at this layer
        return None
    return make_observer(progress)


class Flow(Generic[T_co]):
    """A pipeline of stages over a source iterable; ``Flow[T]`` yields items of type T.

    Args:
        source: any iterable: a list, a generator (consumed lazily, as the
            stages ask for more), or an `ezflow.Q` (its messages' data,
            until its end marker). None: an open input that a started
            flow's handle feeds (``handle.put``, ``submit``, ``process``).
    """

    @overload
    def __init__(self: Flow[Any], source: None = None) -> None: ...
    @overload
    def __init__(self: Flow[Any], source: Q) -> None: ...
    @overload
    def __init__(self, source: Iterable[T_co]) -> None: ...
    def __init__(self, source: Iterable[Any] | None = None) -> None:
        if source is not None and (isinstance(source, (str, bytes)) or not hasattr(source, "__iter__")):
            raise TypeError(
                f"Flow needs an iterable source (a list, a generator, an ezflow.Q), got {type(source).__name__}"
            )
        self._source = source
        self._stages: tuple[StageSpec, ...] = ()
        self._last: Run | None = None

    def _with(self, spec: StageSpec) -> Flow[Any]:
        names = {s.name for s in self._stages}
        if spec.name in names:
            base, n = spec.name, 2
            while f"{base}_{n}" in names:
                n += 1
            spec = _rename(spec, f"{base}_{n}")
        new: Flow[Any] = Flow.__new__(Flow)
        new._source = self._source
        new._stages = self._stages + (spec,)
        new._last = None
        return new

    # -- builders -----------------------------------------------------------

    @overload
    def map(self, fn: Callable[[T_co], Awaitable[R]], /, **options: Unpack[StageOptions]) -> Flow[R]: ...
    @overload
    def map(self, fn: Callable[[T_co], R], /, **options: Unpack[StageOptions]) -> Flow[R]: ...
    @overload
    def map(self, fn: type[StageClass[T_co, R]], /, **options: Unpack[StageOptions]) -> Flow[R]: ...
    def map(self, fn: Any, /, **options: Unpack[StageOptions]) -> Flow[Any]:
        """Add a stage that replaces each item with ``fn(item)``.

        Args:
            fn: a function, or a class (instantiated once per worker, inside
                it; each item then calls the instance; ``close()`` is called
                when the worker is done), or a coroutine function (async mode).
            **options: the stage options, declared once in `StageOptions`
                (the table in docs/map.md): ``workers``, ``mode``, ``errors``,
                ``retries``, ``item_timeout`` (seconds per attempt of one item;
                ``timeout=`` is refused: it only ever means how long a caller
                waits), ``rate``, ``max_memory``, ...

        Returns:
            A new Flow with the stage added.

        Raises:
            TypeError, ValueError: an option is unknown or invalid (the message says which).
        """
        refuse_keywords("Flow.map", options, StageOptions)  # timeout= is item_timeout= now
        return self._with(make_stage("map", fn, **options))

    def filter(
        self, pred: Callable[[T_co], object] | type[StageClass[T_co, object]], /, **options: Unpack[StageOptions]
    ) -> Flow[T_co]:
        """Add a stage that keeps the items for which ``pred(item)`` is true.

        Takes the same options as `map`.
        """
        refuse_keywords("Flow.filter", options, StageOptions)
        return self._with(make_stage("filter", pred, **options))

    @overload
    def flat_map(self, fn: Callable[[T_co], Awaitable[Iterable[R]]], /, **options: Unpack[StageOptions]) -> Flow[R]: ...
    @overload
    def flat_map(self, fn: Callable[[T_co], Iterable[R]], /, **options: Unpack[StageOptions]) -> Flow[R]: ...
    @overload
    def flat_map(self, fn: type[StageClass[T_co, Iterable[R]]], /, **options: Unpack[StageOptions]) -> Flow[R]: ...
    def flat_map(self, fn: Any, /, **options: Unpack[StageOptions]) -> Flow[Any]:
        """Add a stage that replaces each item with the items of ``fn(item)``.

        Takes the same options as `map`.
        """
        refuse_keywords("Flow.flat_map", options, StageOptions)
        return self._with(make_stage("flat_map", fn, **options))

    def batch(self, size: int, *, timeout: float | None = None, name: str | None = None) -> Flow[list[T_co]]:
        """Add a stage that groups items into lists of at most `size`.

        Args:
            size: the largest batch.
            timeout: emit a partial batch this many seconds after its first
                item arrived (default: only when full or at the end).
            name: the stage's name (default "batch").
        """
        return self._with(make_batch(size, timeout, name))

    def unbatch(self: Flow[Iterable[U]], *, name: str | None = None) -> Flow[U]:
        """Add a stage that flattens lists back into single items."""
        return self._with(make_unbatch(name))

    # -- running ------------------------------------------------------------

    def _run(self, progress: Any, source: Any = None, checkpoint: Any = None) -> Runner:
        if checkpoint is not None:
            from ._engine.checkpoint import CheckpointRun

            ck = CheckpointRun(_messages(self._source), self._stages, _observer(progress), checkpoint)
            self._last = ck.run
            return ck
        if source is None:
            if self._source is None:
                raise TypeError(
                    "this Flow has no source: run it with handle = flow.start() and feed it "
                    "with handle.put(item) / handle.close(), or give Flow(...) an iterable"
                )
            source = _messages(self._source)
        run = Run(source, self._stages, _observer(progress))
        self._last = run
        return run

    @public
    def collect(self, **options: Unpack[RunOptions]) -> list[T_co]:
        """Run the flow to the end and return its results as a list.

        Args:
            progress: None (auto: a live view in notebooks and terminals for
                runs longer than a second), True, False, "tqdm", "notebook",
                or an observer object.
            checkpoint: a path (``"runs/thumbnails"``: the file
                ``runs/thumbnails.sqlite``, directories made as needed).
                Results are stored as they are delivered; the same call
                again computes only the items without a stored result.
            checkpoint_match: "value" (default: items by position and
                pickled value, stage functions by code and captured values)
                or "position" (by position only, whatever changed).
            checkpoint_failures: also store failures (``errors="return"``),
                so a later run returns them instead of trying again.

        Raises:
            TaskError: an item failed in a stage with ``errors="raise"``.
            StageError: a stage could not start (its class failed to build).
            CheckpointError: the checkpoint cannot be used (the message says why and what to do).
        """
        progress, ck = run_options("Flow.collect", options)
        return self._run(progress, checkpoint=ck).collect()

    @public
    def iter(self, **options: Unpack[RunOptions]) -> Iterator[T_co]:
        """Return an iterator over the results, computed as you consume them.

        The checkpoint options are those of `collect`; stopping early stores
        the results delivered so far.
        """
        progress, ck = run_options("Flow.iter", options)
        return public_iter(iter(self._run(progress, checkpoint=ck)))

    def __iter__(self) -> Iterator[T_co]:
        return self.iter()

    @public
    def start(self, *, timeout: float | None = None, **options: Unpack[RunOptions]) -> Handle:
        """Start the flow in the background and return its `Handle`.

        Args:
            progress: as for `collect`.
            timeout: seconds to wait for every stage's workers to start
                (class stages built); `TimeoutError` names the slow stage.
            checkpoint, checkpoint_match, checkpoint_failures: as for `collect`
                (``handle.cancel()`` keeps what was stored).

        Returns:
            A `Handle`: ``wait()``, ``cancel()``, ``done()``, ``stats``,
            ``results``; and for a flow built without a source, ``put()``,
            ``close()``, ``submit()`` and ``await process(item)``.
        """
        from ._engine.feed import Feed
        from ._engine.handle import Handle

        progress, ck = run_options("Flow.start", options)
        feed = Feed() if self._source is None and ck is None else None
        return Handle(self._run(progress, feed, checkpoint=ck), timeout=timeout, feed=feed)

    async def acollect(self, *, progress: Any = None) -> list[T_co]:
        """Run the flow without blocking the event loop; return the results."""
        import asyncio

        return await asyncio.to_thread(self.collect, progress=progress)

    async def __aiter__(self) -> AsyncIterator[T_co]:
        import asyncio

        it = self.iter()
        done = object()
        while True:
            item: Any = await asyncio.to_thread(next, it, done)
            if item is done:
                return
            yield item

    @property
    def stats(self) -> FlowStats:
        """The figures of the latest run (live while it runs)."""
        if self._last is None:
            from ._core.stats import _Counters
            from ._engine.run import source_length, stage_totals

            totals = stage_totals(source_length(self._source), self._stages)
            return FlowStats(
                stages=tuple(
                    _Counters(s.name, s.kind, s.mode, s.workers, total=t).snapshot()
                    for s, t in zip(self._stages, totals)
                )
            )
        return self._last.snapshot()

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        """The plan: one frozen spec per stage."""
        return self._stages

    def __repr__(self) -> str:
        parts = [f"Flow({type(self._source).__name__ if self._source is not None else ''})"]
        for s in self._stages:
            if s.kind in ("batch", "unbatch"):
                parts.append(f".{s.kind}({s.size or ''})")
            else:
                parts.append(f".{s.kind}({s.name}, {s.mode}x{s.workers})")
        return "".join(parts)


def run_options(where: str, options: RunOptions) -> tuple[Any, Any]:
    """Return a run's (progress, checkpoint options); the checkpoint module loads only when one is given."""
    refuse_keywords(where, options, RunOptions)
    progress = options.get("progress")
    ck = (options.get("checkpoint"), options.get("checkpoint_match"), options.get("checkpoint_failures"))
    if ck == (None, None, None):
        return progress, None
    from ._engine.checkpoint import checkpoint_options as check

    return progress, check(*ck)


def _messages(source: Any) -> Any:
    """Read an ezflow.Q as the data of its messages; any other iterable as is."""
    cls = type(source)
    if cls.__name__ == "Q" and cls.__module__ == "ezflow._ezq.queue":  # no import of the Q layer just to check
        return (msg.data for msg in source)
    return source


def _rename(spec: StageSpec, name: str) -> StageSpec:
    return replace(spec, name=name)

