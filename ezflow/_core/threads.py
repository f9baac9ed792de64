"""Threads for a run's own loops, kept between runs: a warm call starts none.

    Job(target, name).start()      an idle kept thread takes it at once; else a new thread starts
    spawn(target, name) -> Job     the same in one call
    job.join(timeout), job.is_alive(), job.ident, job.name

A run starts about five loops (source, feeder, sender, collector, memory
watch). Starting a thread waits until the new thread runs (about 100 µs
here, far more on a busy machine), a fifth of a warm ``ezflow.map``; handing
a loop to a kept thread is a queue put (1 µs). A thread whose loop ended
waits `IDLE_SECONDS` for the next one, then exits; at most `MAX_IDLE` wait.

Only ezflow's own loops run here. A thread stage's workers and an async
stage's event loop run the user's code, which may keep state per thread
(``threading.local``), so they get threads of their own.

A forked child has only the forking thread: its idle count starts at zero.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from .forks import at_fork

__all__ = ["IDLE_SECONDS", "MAX_IDLE", "Job", "spawn"]

IDLE_SECONDS = 30.0
MAX_IDLE = 16

_lock = threading.Lock()
_jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
_idle = 0  # kept threads that will take the next job from `_jobs`


class Job:
    """One loop handed to a thread; joinable like a thread."""

    __slots__ = ("_done", "ident", "name", "target")

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self.target = target
        self.name = name
        self.ident: int | None = None  # of the thread running it, once one does
        self._done = threading.Event()

    def start(self) -> Job:
        """Hand the loop to an idle kept thread, or start a new thread for it."""
        global _idle
        with _lock:
            if _idle > 0:
                _idle -= 1
                _jobs.put(self)
                return self
        threading.Thread(target=_serve, args=(self,), name=self.name, daemon=True).start()
        return self

    def join(self, timeout: float | None = None) -> None:
        """Wait until the loop has returned (at once from inside it: a loop cannot wait for itself)."""
        if self.ident is not None and self.ident == threading.get_ident():
            return
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()


def spawn(target: Callable[[], object], name: str) -> Job:
    """Run `target` on a kept thread (or a new one) and return its `Job`."""
    return Job(target, name).start()


def _run(job: Job) -> None:
    me = threading.current_thread()
    me.name = job.name
    job.ident = me.ident
    try:
        job.target()
    finally:
        # a kept thread must not keep what its loop held alive (a run, its arrays and segments)
        job.target = _nothing
        job._done.set()
        me.name = "ezflow-idle"


def _nothing() -> None:
    pass


def _serve(job: Job | None) -> None:
    global _idle
    while job is not None:
        _run(job)
        job = None  # nothing of the last loop stays reachable while this thread waits
        with _lock:
            if _idle >= MAX_IDLE:
                return
            _idle += 1
        job = _next()


def _next() -> Job | None:
    global _idle
    try:
        return _jobs.get(timeout=IDLE_SECONDS)
    except queue.Empty:
        pass
    with _lock:
        if _idle > 0:  # still counted idle: nobody handed us a job; leave
            _idle -= 1
            return None
    return _jobs.get()  # a spawn() counted on us just as we timed out: its job is on the way


def _after_fork_in_child() -> None:
    global _idle, _jobs, _lock
    _lock = threading.Lock()
    _jobs = queue.SimpleQueue()
    _idle = 0


at_fork(after_in_child=_after_fork_in_child)
