"""`run` and `run_thread`: start a function in a worker process or thread, and the `Worker` handle."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable
from typing import Any

from .._core.env import default_start_method
from .._core.errors import WorkerDied, attach_traceback
from .._core.procs import check_start_method, start_child
from .._transport.serialize import loads
from .broker import _Broker
from .channel import _Channel
from .child import _bootstrap, _Call


class Worker:
    """A function running in a worker process (`run`) or thread (`run_thread`).

    Attributes:
        kind: "process" or "thread".
        name: the worker's name.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        *,
        proc: Any = None,
        channel: _Channel | None = None,
        thread: threading.Thread | None = None,
    ) -> None:
        """Wrap a started process or thread; use `run` or `run_thread` instead."""
        self.kind = kind
        self.name = name
        self._proc = proc
        self._channel = channel
        self._thread = thread
        self._error: BaseException | None = None  # a thread's, or a decoded DONE
        self._decoded = False

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else f"exitcode={self.exitcode}"
        pid = f" pid={self.pid}" if self.kind == "process" else ""
        return f"<Worker {self.kind} {self.name!r}{pid} {state}>"

    @property
    def pid(self) -> int | None:
        """Return the worker process's id (None for a thread)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def exitcode(self) -> int | None:
        """Return None while running; then 0 on success, else non-zero.

        A process reports its exit status (-N: killed by signal N); a thread
        reports 1 when its function raised.
        """
        if self._proc is not None:
            return self._proc.exitcode
        assert self._thread is not None
        if self._thread.is_alive() or self._thread.ident is None:
            return None
        return 0 if self._error is None else 1

    def is_alive(self) -> bool:
        """Return True while the function is still running."""
        if self._proc is not None:
            return bool(self._proc.is_alive())
        assert self._thread is not None
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker to finish; then `exception` says how it ended.

        For a process, "finished" also means every message it put has
        reached its queue.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.
        """
        if self._thread is not None:
            self._thread.join(timeout)
            return
        assert self._channel is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._channel.finished.wait(timeout):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._proc.join(left)

    @property
    def exception(self) -> BaseException | None:
        """Return the exception the worker's function raised, once finished.

        None while the worker runs, and after a success. A process that died
        without reporting (killed, crashed) gives `ezflow.WorkerDied`.
        """
        if self._thread is not None:
            return None if self._thread.is_alive() else self._error
        assert self._channel is not None
        if not self._channel.finished.is_set() or self._proc.exitcode is None:
            return None
        if not self._decoded:
            self._decoded = True
            ch = self._channel
            if ch.error:
                self._error = attach_traceback(*loads(ch.error))
            elif not ch.done:
                self._error = WorkerDied(self._proc.exitcode)
        return self._error

    def terminate(self) -> None:
        """Send SIGTERM to a process worker.

        Raises:
            TypeError: the worker is a thread, which cannot be stopped from outside.
        """
        if self._proc is None:
            raise TypeError("a thread worker cannot be terminated; end its queue instead")
        self._proc.terminate()


_names = itertools.count(1)


def _worker_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__name__', type(fn).__name__)}-{next(_names)}"


def run(fn: Callable[..., Any], /, *args: Any, start_method: str | None = None, **kwargs: Any) -> Worker:
    """Run ``fn(*args, **kwargs)`` in a new daemonic worker process.

    Args:
        fn: the function; lambdas, closures and notebook functions work
            under every start method.
        *args: its positional arguments (`Q` objects among them).
        start_method: "fork", "spawn" or "forkserver"; None: ezflow's
            default (the one set with ``multiprocessing.set_start_method``
            if any).
        **kwargs: its keyword arguments.

    Returns:
        The running `Worker`.

    Raises:
        ValueError: `start_method` is not available here.
        RuntimeError: called inside a worker process (they are daemonic).
        TypeError: `fn` or an argument cannot be sent to the child.
    """
    method = start_method or default_start_method()
    check_start_method(method)
    if multiprocessing.current_process().daemon:
        raise RuntimeError(
            "run() cannot start a process inside a worker process (workers are daemonic); "
            "use run_thread() there"
        )
    broker = _Broker.get()
    name = _worker_name(fn)
    proc, owner_end = start_child(
        _bootstrap, start_method=method, name=name, daemon=True, args=(_Call(fn, args, kwargs),)
    )
    channel = _Channel(owner_end, proc)
    broker.add(channel)
    return Worker("process", name, proc=proc, channel=channel)


def run_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Worker:
    """Run ``fn(*args, **kwargs)`` in a new daemonic thread.

    Args:
        fn: the function.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        The running `Worker`; its `exception` is the one `fn` raised.
    """
    worker: Worker

    def target() -> None:
        try:
            fn(*args, **kwargs)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                worker._error = RuntimeError(f"thread worker {name!r} called sys.exit({exc.code!r})")
        except BaseException as exc:
            worker._error = exc

    name = _worker_name(fn)
    # daemonic: a worker stuck on a queue must not keep the interpreter alive
    thread = threading.Thread(target=target, name=name, daemon=True)
    worker = Worker("thread", name, thread=thread)
    thread.start()
    return worker
