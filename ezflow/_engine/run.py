"""One execution of a plan: threads, channels and the consumer.

    source thread --ch[0]--> stage 0 --ch[1]--> stage 1 ... --ch[n]--> consumer
         (iterates the user's iterable,                         (the caller's thread:
          in chunks)                                             collect() or iteration)
    ticker thread: every TICK_SECONDS, a FlowStats snapshot to each observer

`abort(error)` (an item failed with errors="raise", a worker could not
start, a bug) and `cancel()` (Ctrl-C, a consumer that stopped iterating,
`handle.cancel()`) both cancel every channel, which wakes every blocked
thread at once, and stop every executor (process workers are killed). The
consumer then raises the error. Nothing waits on a sleep loop.
"""

from __future__ import annotations

import atexit
import itertools
import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .._core.errors import Cancelled, StageError
from .._core.observe import TICK_SECONDS
from .._core.stats import FlowStats, _Counters
from .._core.threads import Job, spawn
from .._executors.port import Chunk
from .._plan.chain import runs
from .._plan.spec import StageSpec
from .channel import Channel, EndOfStream
from .source import ChunkReader
from .stage import StageDriver

if TYPE_CHECKING:  # loaded on use: a plain map has no batch stage and no budget (`import ezflow` stays light)
    from .batch import BatchDriver, UnbatchDriver
    from .budget import Budget

__all__ = ["Run", "Runner", "gather"]


@runtime_checkable
class Runner(Protocol):
    """What `Flow` and `Handle` use of a run: a `Run`, or a `CheckpointRun` around one."""

    @property
    def specs(self) -> tuple[StageSpec, ...]: ...

    @property
    def state(self) -> str: ...

    @property
    def stop_reason(self) -> str | None: ...

    def start(self) -> None:
        """Start the workers and the source (raises what setting a stage up raised)."""

    def chunks(self) -> Iterator[Chunk]:
        """Yield the results in chunks (closing it cancels the run)."""

    def __iter__(self) -> Iterator[Any]: ...

    def collect(self) -> list:
        """Run to the end and return every result in a list."""

    def cancel(self, state: str = "cancelled") -> None:
        """Stop now: workers stopped, the results that finished kept."""

    def request_stop(self, reason: str) -> None:
        """Stop on someone's request (the Stop button, ``handle.cancel()``), naming who asked."""

    def snapshot(self) -> FlowStats:
        """Return the figures of this run now."""

# Items a paused generator already gave are handed on after this long.
SOURCE_CHUNK_SECONDS = 0.01
JOIN_SECONDS = 2.0


def stage_totals(total: int | None, specs: tuple[StageSpec, ...]) -> list[int | None]:
    """Return how many items each stage should see, where that is known."""
    out = []
    for spec in specs:
        out.append(total)
        if total is None:
            continue
        if spec.kind == "batch":
            total = math.ceil(total / spec.size)
        elif spec.kind != "map":
            total = None
    return out


def source_length(source: Any) -> int | None:
    """Return len(source) for sized collections, None for iterators."""
    try:
        return len(source)
    except Exception:
        return None


class Run:
    """Runs a plan once; iterate it (or call `collect`) to get the results."""

    def __init__(
        self,
        source: Iterable[Any],
        specs: tuple[StageSpec, ...],
        observer: Any = None,
        positions: Callable[[int, int], range | list] | None = None,
    ) -> None:
        self.source = source
        self.positions = positions  # a checkpoint feeds only missing items: their source indices
        self.from_checkpoint = 0  # source items whose results a checkpoint supplied
        self.specs = specs
        self.total = source_length(source)
        self.error: BaseException | None = None
        self.late_error: BaseException | None = None
        self.state = "pending"
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._observer = observer
        self._notify_lock = threading.Lock()
        self._observer_closed = False
        self.stop_reason: str | None = None  # who asked the run to stop (Stop button, handle.cancel())
        self.counters = [
            _Counters(s.name, s.kind, "dask" if s.backend is not None else s.mode, s.workers, total=t)
            for s, t in zip(specs, stage_totals(self.total, specs), strict=True)
        ]
        self.channels = [
            Channel(max(2, 2 * s.workers if s.mode != "inline" else 2), c)
            for s, c in zip(specs, self.counters, strict=True)
        ]
        self.channels.append(Channel(4))
        self.drivers: list[StageDriver | BatchDriver | UnbatchDriver] = []
        self.stages_of: list[range] = []  # the stages each driver runs (several: a chain, plan.chain)
        for r in runs(specs):
            i = r.start
            if len(r) > 1:  # consecutive plain process maps: one stage of workers runs them all
                from .fused import FusedDriver

                fused = FusedDriver(
                    specs[i : r.stop], self, self.channels[i], self.channels[r.stop], self.counters[i : r.stop],
                    total=self.counters[i].total,
                )
                self.drivers.append(fused)
                self.stages_of.append(r)
                continue
            spec = specs[i]
            cls: type[StageDriver] | type[BatchDriver] | type[UnbatchDriver] = StageDriver
            if spec.kind in ("batch", "unbatch"):
                from .batch import BatchDriver, UnbatchDriver

                cls = BatchDriver if spec.kind == "batch" else UnbatchDriver
            self.drivers.append(
                cls(spec, self, self.channels[i], self.channels[i + 1], self.counters[i], total=self.counters[i].total)
            )
            self.stages_of.append(r)
        # process stages left at workers=None follow one CPU budget (set before setup: it sizes their pools)
        self.budget: Budget | None = None
        if sum(d.spec.auto_workers * len(r) for d, r in zip(self.drivers, self.stages_of, strict=True)) >= 2:
            from .budget import Budget

            self.budget = Budget.of(list(zip(self.stages_of, self.drivers, strict=True)), self.snapshot)
        self._threads: list[Job] = []
        self._reader: ChunkReader | None = None

    # -- starting ---------------------------------------------------------

    def start(self) -> None:
        """Start every stage's workers, then the source; raise if a stage cannot start."""
        with self._lock:
            if self.state != "pending":
                raise RuntimeError("a run can only be started once")
            self.state = "running"
        _running.add(self)
        self.started_at = time.perf_counter()
        if self._observer is not None:
            bind = getattr(self._observer, "bind_stop", None)
            if callable(bind):  # a view with a Stop button (the notebook panel)
                bind(lambda: self.request_stop("the panel's Stop button"))
            self._notify("open")
        try:
            self._setup_executors()
        except BaseException as exc:
            self._fail_start(exc)
            raise
        for d in self.drivers:
            d.start()
        self._spawn(self._source_loop, "ezflow-source")
        if self.budget is not None:  # not joined: it ends with the run (`_done`)
            budget = self.budget
            spawn(lambda: budget.run(self._done), "ezflow-budget")
        if self._observer is not None:
            # not in self._threads: it runs until the run has ended, after the joins
            spawn(self._tick_loop, "ezflow-ticker")

    def _setup_executors(self) -> None:
        drivers = [d for d in self.drivers if d.spec.mode != "inline"]
        if len(drivers) <= 1:
            for d in drivers:
                d.executor.setup()
            return
        errors: list[BaseException] = []

        def setup(d: StageDriver | BatchDriver | UnbatchDriver) -> None:
            try:
                d.executor.setup()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=setup, args=(d,), daemon=True) for d in drivers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _fail_start(self, exc: BaseException) -> None:
        self.error = exc
        stage = exc.stage if isinstance(exc, StageError) else None
        self._stop("failed", stage)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = Job(target, name)
        self._threads.append(t)
        t.start()

    def _source_loop(self) -> None:
        inbox = self.channels[0]
        first = self.drivers[0] if self.drivers else None
        index = 0
        try:
            reader = self._reader = ChunkReader(self.source)
            for seq in itertools.count():
                n = first.suggest_chunk() if first is not None else 256
                items = reader.take(n, SOURCE_CHUNK_SECONDS)
                if not items:
                    break
                idx = range(index, index + len(items)) if self.positions is None else self.positions(index, len(items))
                inbox.put(Chunk(seq, idx, items), len(items))
                index += len(items)
            inbox.close()
        except Cancelled:
            return
        except BaseException as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(f"(raised by the flow's source iterable after {index} items)")
            self.abort(exc)

    # -- observing --------------------------------------------------------

    def snapshot(self) -> FlowStats:
        """Return the figures of this run now."""
        if self.started_at is None:
            elapsed = 0.0
        else:
            elapsed = (self.ended_at or time.perf_counter()) - self.started_at
        err = None
        if self.error is not None:
            err = f"{type(self.error).__name__}: {self.error}"
        return FlowStats(
            stages=tuple(c.snapshot() for c in self.counters),
            elapsed=elapsed,
            state=self.state,
            total=self.total,
            error=err,
            from_checkpoint=self.from_checkpoint,
        )

    def _notify(self, method: str) -> None:
        # One call at a time, and nothing after close: the ticker and the
        # thread ending the run must never race to open or update a view.
        with self._notify_lock:
            obs = self._observer
            if obs is None or self._observer_closed:
                return
            if method == "close":
                self._observer_closed = True
            try:
                getattr(obs, method)(self.snapshot())
            except Exception as exc:  # a broken view must never break the work
                self._observer = None
                warnings.warn(
                    f"ezflow: progress view disabled after an error: {exc!r}", RuntimeWarning, stacklevel=2
                )

    def _tick_loop(self) -> None:
        while not self._done.wait(TICK_SECONDS):
            self._notify("update")

    # -- ending -----------------------------------------------------------

    def abort(self, exc: BaseException, stage: str | None = None, late: bool = False) -> None:
        """Fail the run with `exc` (the first error wins) and stop everything."""
        with self._lock:
            if late:  # the stage's work is all delivered; the consumer raises it at the end
                self.late_error = self.late_error or exc
                return
            if self.error is not None or self.state not in ("running", "pending"):
                return
            self.error = exc
        self._stop("failed", stage)

    def cancel(self, state: str = "cancelled") -> None:
        """Stop the run now; results not yet delivered are dropped."""
        with self._lock:
            if self.state != "running":
                return
        self._stop(state, None)

    def request_stop(self, reason: str) -> None:
        """Stop the run now at the user's request (`reason` names who asked); safe from any thread.

        A caller blocked in `chunks()` then gets `Cancelled` saying so,
        rather than the bare wake-up the engine's own threads get.
        """
        with self._lock:
            if self.state != "running":
                return
            self.stop_reason = self.stop_reason or reason
        self.cancel("cancelled")

    def _stop(self, state: str, stage: str | None) -> None:
        with self._lock:
            if self.state in ("done", "failed", "cancelled"):
                return
            self.state = state
        for ch in self.channels:
            ch.cancel()
        if self._reader is not None:
            self._reader.cancel()
        for d, r in zip(self.drivers, self.stages_of, strict=True):
            d.cancel()
            for c in self.counters[r.start : r.stop]:
                # a chain's workers that could not start: each of its stages failed (`d.spec.name`)
                if state == "failed" and stage in (c.name, d.spec.name):
                    c.finish("failed", f"{type(self.error).__name__}: {self.error}")
                else:
                    c.finish("cancelled" if c.state in ("pending", "running") else c.state)
        self._end()

    def _end(self) -> None:
        self.ended_at = self.ended_at or time.perf_counter()
        self._done.set()
        self._notify("close")

    def wait_workers(self, timeout: float = JOIN_SECONDS) -> None:
        """Wait (bounded) for the run's own threads and executors to wind down."""
        end = time.monotonic() + timeout
        for d in self.drivers:
            d.executor.join(max(0.0, end - time.monotonic()))
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))  # returns at once from inside its own loop

    def _finish_ok(self) -> None:
        self.wait_workers(30.0)
        with self._lock:
            if self.state != "running":
                return
            self.state = "done" if self.late_error is None else "failed"
            if self.late_error is not None:
                self.error = self.late_error
        self._end()
        if self.late_error is not None:
            raise self.late_error

    # -- consuming ----------------------------------------------------------

    def chunks(self) -> Iterator[Chunk]:
        """Yield the last stage's chunks in order; raise the run's error if it fails."""
        if self.state == "pending":
            self.start()
        outbox = self.channels[-1]
        try:
            while True:
                try:
                    chunk = outbox.get()
                except EndOfStream:
                    break
                except Cancelled:
                    if self.error is not None:
                        raise self.error from self.error.__cause__
                    if self.stop_reason is not None:
                        raise Cancelled(f"the run was stopped by {self.stop_reason}") from None
                    raise
                yield chunk
        except BaseException as exc:
            if isinstance(exc, GeneratorExit) and self.state != "running":
                raise  # ended already (at exit: by _cancel_at_exit, while modules could still run)
            interrupted = isinstance(exc, (KeyboardInterrupt, GeneratorExit))
            self.cancel("cancelled" if interrupted else "failed")
            self.wait_workers(1.0)
            raise
        self._finish_ok()

    def __iter__(self) -> Iterator[Any]:
        for chunk in self.chunks():
            yield from chunk.items

    def collect(self) -> list:
        """Run to the end and return every result in a list."""
        return gather(self.chunks())


def gather(chunks: Iterable[Chunk]) -> list:
    """Return every item of `chunks` in a list; a stop mid-way hands the caller what came before it."""
    out: list = []
    try:
        for chunk in chunks:
            out.extend(chunk.items)
    except Cancelled as exc:
        exc.results = out
        n = len(out)
        if n == 0:
            kept = "no result was delivered before it"
        elif n == 1:
            kept = "the result delivered before it is in .results"
        else:
            kept = f"the {n} results delivered before it are in .results"
        exc.args = (f"{exc}; {kept}",)
        raise
    return out


# A script may end with an unfinished imap: its generator is finalized after
# module globals are gone, where clean-up code cannot run. Stop such runs
# while everything still works (atexit runs before that teardown).
_running: weakref.WeakSet[Run] = weakref.WeakSet()


def _cancel_at_exit() -> None:
    for run in list(_running):
        if run.state == "running":
            run.cancel("cancelled")
            run.wait_workers(0.5)


atexit.register(_cancel_at_exit)
