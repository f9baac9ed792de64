"""`ezflow.Executor`: a `concurrent.futures.Executor` on ezflow's warm workers.

    ex.submit(fn, *args, **kw) -> Future ----+
    ex.map(fn, *iterables)    -> submits ----+--> Feed (a source-less Flow's input) --> one map stage
    loop.run_in_executor(ex, fn, x) ---------+        `_Call` items                    (process | thread)
                                                                                            |
    future.result() <-- Handle: each result or Failure settles its item's Future <---------+

Not a second engine: the executor is ``Flow().map(_call, errors="return", ordered=False)``
started once, fed through its handle. Calls stream through it: the flow
takes every waiting call at once and cuts them into pieces sized from the
measured time per call (slow calls alone), shared out among the workers
(`start_when_free`: none queues behind a busy worker). A call's future turns
running only as a worker starts it (`claim`), so a waiting call stays
cancellable; each result goes back as soon as it is done (`report_each`). Functions travel with dill when they
must (lambdas, notebook code), numpy arrays through shared memory as in
`ezflow.map`. A failed call raises an exception of the original type that is
also a `TaskError`; a worker that dies fails only the call it was running,
with `WorkerDied`, and the executor goes on.
"""

from __future__ import annotations

import concurrent.futures
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from ._core.entry import public, public_iter
from ._core.errors import short_repr
from ._core.record import replace
from ._engine.feed import claim
from ._engine.handle import Handle
from ._executors.items import report_each
from ._flow import Flow

__all__ = ["Executor"]

_MODES = ("process", "thread")


class _Call:
    """One submitted call: what travels to a worker, and how errors name it."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future: Future | None = None  # set in the parent; never travels

    def __reduce__(self) -> tuple:
        # pickled by the sender thread as it hands the call to a free worker process: the
        # moment its future turns running; a call cancelled before that travels as a no-op
        if self.future is not None and not claim(self.future):
            return (_Call, (_skipped, (), {}))
        return (_Call, (self.fn, self.args, self.kwargs))

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or type(self.fn).__name__
        parts = [short_repr(a) for a in self.args] + [f"{k}={short_repr(v)}" for k, v in self.kwargs.items()]
        return f"{name}({', '.join(parts)})"


def _skipped() -> None:
    return None  # a cancelled call: its future is cancelled already, this result is dropped


@report_each  # a finished call's result never waits for the calls sent with it
def _call(call: _Call) -> Any:
    future = call.future
    if future is not None and not claim(future):  # a worker thread starts it (mode="thread")
        return None
    return call.fn(*call.args, **call.kwargs)


class Executor(concurrent.futures.Executor):
    """Run calls on ezflow's warm workers, behind the `concurrent.futures.Executor` interface.

    Code written for `ProcessPoolExecutor` (``submit``, ``map``,
    ``as_completed``, ``asyncio``'s ``run_in_executor``, libraries that take
    an ``executor=``) runs on it unchanged, and gains what ezflow's workers
    do: lambdas and notebook functions under every start method, numpy
    arrays through shared memory, a worker death that fails only its call.

    Args:
        max_workers: parallel workers (default: one per CPU for processes,
            `NUM_THREADS` for threads).
        mode: "process" (default) or "thread".
        start_method: "fork", "spawn" or "forkserver" (default: ezflow's choice).
        max_tasks_per_worker: replace a worker process after this many calls.
        max_memory: a worker process's memory limit ("2GB", bytes); a call that
            takes a worker past it fails with `MemoryLimitExceeded`.

    Raises:
        ValueError: ``max_workers`` is not >= 1, ``mode`` is not one of those above, or an
            option does not apply to the mode (the message says which).
    """

    @public
    def __init__(
        self,
        max_workers: int | None = None,
        *,
        mode: str = "process",
        start_method: str | None = None,
        max_tasks_per_worker: int | None = None,
        max_memory: int | str | None = None,
    ) -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)):
            raise TypeError(f"max_workers must be an int or None, got {type(max_workers).__name__}")
        if max_workers is not None and max_workers <= 0:
            raise ValueError(f"max_workers must be greater than 0, got {max_workers}")
        if mode not in _MODES:
            raise ValueError(f"mode must be 'process' or 'thread' for an Executor, got {mode!r}")
        opts: dict[str, Any] = {"start_method": start_method}
        if max_tasks_per_worker is not None or max_memory is not None:  # thread mode refuses them, saying why
            opts.update(max_tasks_per_worker=max_tasks_per_worker, max_memory=max_memory)
        # built (and its options checked) now; its workers start with the first submit. Calls that
        # queue up travel several to a message, sized from the measured time per call (slow calls
        # one at a time); each result is delivered as it is done, not with its message's
        flow = Flow().map(
            _call, workers=max_workers, mode=mode, name="Executor", errors="return", ordered=False, **opts
        )
        flow._stages = (replace(flow.stages[0], start_when_free=True),)
        self._flow = flow
        self._lock = threading.Lock()
        self._handle: Handle | None = None
        self._shutdown = False

    def _started(self) -> Handle:
        # under self._lock
        if self._handle is None:
            handle = self._flow.start(progress=False)
            # calls stream through the flow, but each future turns running (and can no longer be
            # cancelled) only as a worker starts it: see _Call.__reduce__ and _call
            handle.start_on_claim()
            self._handle = handle
            # dropped without shutdown(): end the input, so the run (and its workers) ends too
            weakref.finalize(self, handle.close)
        return self._handle

    @public
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Schedule ``fn(*args, **kwargs)`` and return a Future of its result.

        Raises:
            RuntimeError: the executor was shut down.
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            handle = self._started()
            if handle.done():
                raise RuntimeError(f"cannot schedule new futures: the executor's run ended ({handle!r})")
            call = _Call(fn, args, kwargs)
            future: Future = Future()
            call.future = future  # before the flow can take the call
            handle.feed(call, future)
            return future

    @public
    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Return an iterator of ``fn(*args)`` over the zipped `iterables`, in order.

        Every call is submitted now; the iterator raises `TimeoutError` if a
        result is not ready `timeout` seconds after this call, and the first
        failed call's exception when it comes to that call. Leaving the
        iterator early cancels the calls not started yet.

        Args:
            chunksize: accepted for `ProcessPoolExecutor` compatibility; ezflow
                sizes the messages to its workers itself.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        return public_iter(super().map(fn, *iterables, timeout=timeout))

    @public
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; let the submitted ones finish (or cancel those not started).

        Args:
            wait: return only once every running call has ended and the workers are free.
            cancel_futures: cancel the calls that have not started yet.
        """
        with self._lock:
            self._shutdown = True
            handle = self._handle
        if handle is None:
            return
        if cancel_futures:
            handle.cancel_waiting()
        handle.close()
        if wait:
            try:
                handle.wait()
            except Exception:
                pass  # a run that failed has already failed every future it held, saying why

    def __repr__(self) -> str:
        state = "shut down" if self._shutdown else "idle" if self._handle is None else "running"
        spec = self._flow.stages[0]
        return f"<ezflow.Executor {spec.mode} x{spec.workers}, {state}>"
