"""The executor base class: what every backend shares, written once.

    engine --setup()/close()/cancel()/join()--> Executor (one backend)
           <--------- StagePort ---------------   its threads: take, run, done

A backend writes how its workers start and how a piece reaches them; the
base owns the rest, so the rules cannot drift between backends:

- its threads run inside one guard: `Cancelled` ends them quietly, any other
  exception is a bug that fails the run (never a hang);
- the `StageError` messages for a stage that cannot start or whose
  ``close()`` raised;
- items that cannot be sent: only those fail, the others run;
- a worker that died: a lone item fails (`WorkerDied`, `ItemTimeout`), a
  larger piece is split into single items that run again, alone;
- `close` / `cancel` / `join`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .._core.errors import Cancelled, StageError, attach_traceback, describe, pack_exception, short_repr
from .._core.threads import Job
from .port import ItemError, Piece, StagePort
from .rules import ItemRules

if TYPE_CHECKING:
    from .._plan.spec import StageSpec

__all__ = ["Executor"]


class Executor:
    """Runs one stage's pieces on some workers; subclass it for a backend.

    A backend overrides `setup` (start the workers; raise `StageError` if the
    stage cannot be built) and, if it has threads of its own blocked
    somewhere the port cannot reach, `_wakeup` (called by `close` and
    `cancel`). `close` must never block: it may be called from a worker thread.
    """

    # how an item that cannot be sent names where it was going
    sends_to = "a worker"

    def __init__(self, spec: StageSpec, port: StagePort) -> None:
        self.spec = spec
        self.port = port
        self.closing = False  # the stage's work is all done: wind down
        self.cancelled = False  # stop now
        self.broken = False  # a bug or a lost worker: pools are not reused
        self._threads: list[threading.Thread | Job] = []
        self._threads_lock = threading.Lock()
        self.rules = ItemRules.of(spec)  # decides whether a lone item that timed out or died is tried again

    # -- the contract with the engine ----------------------------------------

    def setup(self) -> None:
        """Start the workers and build the stage in each; raise `StageError` if that fails."""

    def close(self) -> None:
        """The stage's work is all done: tear down once the workers are idle (never blocks)."""
        self.closing = True
        self._wakeup()

    def cancel(self) -> None:
        """Stop now: results not yet reported are dropped."""
        self.cancelled = True
        self._wakeup()

    def join(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for this executor's own threads."""
        end = time.monotonic() + timeout
        with self._threads_lock:
            threads = list(self._threads)
        for t in threads:
            if t is not threading.current_thread() and self._joinable(t):
                t.join(max(0.0, end - time.monotonic()))

    def resize(self, workers: int) -> None:
        """Run `workers` workers from now on (the flow's CPU budget moved some).

        Only a backend whose workers can follow a budget acts on it (process
        stages, `elastic.ElasticSizing`); the others keep their fixed `spec.workers`.
        """

    def sched_seconds(self) -> tuple[float, float | None] | None:
        """Return the CPU seconds this stage's workers used so far and the seconds they waited for a core.

        None: this backend does not measure it; a wait of None: only the CPU time is known.
        """
        return None

    # -- for backends ------------------------------------------------------------

    def _wakeup(self) -> None:
        """Wake this executor's threads so they see `closing` / `cancelled` (a backend adds its own)."""
        self.port.wake()

    def _joinable(self, thread: threading.Thread | Job) -> bool:
        return True

    def _spawn(
        self,
        target: Callable[[], None],
        role: str,
        after: Callable[[], None] | None = None,
        *,
        own: bool = False,
        also: list[threading.Thread | Job] | None = None,
    ) -> None:
        """Run `target` inside the guard on a thread; `after` runs when it ends, whatever happened.

        ezflow's own loops run on kept threads (`threads`); `own`: a thread of
        its own, for a loop that runs the user's code (a thread worker, an event loop).
        `also`: another list of this executor's threads to put it in, with the same lock.
        """
        name = f"ezflow-{role}-{self.spec.name}"
        t: threading.Thread | Job
        if own:
            t = threading.Thread(target=self._guarded, args=(target, after), name=name, daemon=True)
        else:
            t = Job(lambda: self._guarded(target, after), name)
        with self._threads_lock:
            self._threads.append(t)  # before start(): join() may run at any moment
            if also is not None:
                also.append(t)
        t.start()

    def _guarded(self, target: Callable[[], None], after: Callable[[], None] | None) -> None:
        try:
            target()
        except Cancelled:
            pass
        except BaseException as exc:  # a bug here must fail the run, not hang it
            self.broken = True
            self.port.fail(exc)
        finally:
            if after is not None:
                after()

    def _what(self) -> str:
        return short_repr(self.spec.fn) + ("()" if self.spec.is_class else "")

    def _setup_error(self, exc: BaseException, where: str = "") -> StageError:
        """Return the `StageError` for a stage whose function or class failed to build (`where`: e.g. "in a worker")."""
        place = f" could not be set up {where}:" if where else " raised"
        err = StageError(self.spec.name, f"{self._what()}{place} {describe(exc)}")
        err.__cause__ = exc
        return err

    def _close_failed(self, exc: BaseException, tb: str = "") -> None:
        """The stage's ``close()`` raised in a worker: the run fails once its results are out."""
        err = StageError(self.spec.name, f"close() raised {describe(exc)}")
        err.__cause__ = attach_traceback(exc, tb) if tb else exc
        self.port.fail(err, late=True)

    def _unsendable(self, piece: Piece, exc: Exception) -> None:
        """`piece` could not be sent: fail only the items that cannot travel; the others run again."""
        from .._transport.serialize import dumps

        good = []
        for pos, item in enumerate(piece.items):
            one = Piece(piece.chunk, piece.start + pos, [item], isolated=piece.isolated)
            try:
                dumps(item, to_worker=True)
            except Exception as e:
                err = TypeError(f"the item cannot be sent to {self.sends_to}: {describe(e)}")
                self.port.done(one, [None], [ItemError(0, *pack_exception(err), 1)], 0.0)
            else:
                good.append(one)
        if good:
            self.port.give_back(good)

    def _worker_died(self, pieces: Sequence[Piece], err: BaseException) -> None:
        """A worker died holding `pieces` (the first was running): a lone item fails with `err`,
        a larger piece runs again item by item, alone, to find the item that kills; the rest run elsewhere."""
        if not pieces:
            return
        running, rest = pieces[0], list(pieces[1:])
        if len(running.items) == 1:
            failed = self.rules.on_lost(running, err, self.port.give_back)
            if failed is not None:
                self.port.done(running, [None], [failed], 0.0)
        else:
            rest = running.singles() + rest
        if rest:
            self.port.give_back(rest)
