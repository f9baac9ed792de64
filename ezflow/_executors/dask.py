"""Dask executor: a stage's pieces run as tasks on a `dask.distributed` cluster.

    port.take(room) ----> sender thread --client.submit(_run_remote, token, payload, items)--> scheduler
                           (at most `limit` pieces                                               |
                            in flight: backpressure)                                             v
    port.done() <--------- collector thread <--as_completed + gather-- dask worker: runtime cached per
                           (KilledWorker: split the piece,              worker, run_piece(), result bytes
                            re-run its items one by one)

One piece is one dask task, so tiny items travel by the thousand and the
scheduler sees a few tasks a second, not one per item; big items (arrays)
go a few at a time, about 8 MiB a task at most. The stage itself
(function or class, ``when``, retry rules) travels once, as the result of
a small "payload" task every piece depends on: each worker fetches it once
and builds the stage's runtime there, cached by the stage's token (a class
is instantiated once per dask worker and shared by that worker's threads).
The payload is a task, not scattered data, so the scheduler can compute it
again if the worker holding it dies.

Items and results cross as ezflow's own bytes (pickle, dill for what
pickle refuses), so an item or result that cannot travel fails alone, as in
process workers. A piece whose workers keep dying ends in ``KilledWorker``:
its items are then re-run one at a time, alone on the cluster ("quarantine",
so no innocent item shares a dying worker), and the item that still kills
its worker becomes a `WorkerDied` failure. A worker lost for another reason
is dask's business: it reschedules the piece and results stay exact.

The functions that run on the dask workers are in `dask_remote`.
"""

from __future__ import annotations

import itertools
import re
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from .._core.errors import StageError, WorkerDied
from .._transport.serialize import dumps, loads
from .base import Executor
from .dask_client import DaskNotInstalled, connect, import_distributed
from .dask_remote import _hold, _run_remote, _setup_remote, _SetupFailed, _teardown_remote
from .port import Piece, StagePort

if TYPE_CHECKING:
    from .._plan.spec import StageSpec

__all__ = ["DaskExecutor", "DaskNotInstalled", "import_distributed"]

# Futures in flight per dask worker thread: enough that a thread never waits
# for its next piece, few enough that a generator source is not run far ahead.
FUTURES_PER_THREAD = 3
MIN_IN_FLIGHT = 4
# How often the sender asks the scheduler how many threads the cluster has
# (an adaptive cluster grows and shrinks while a stage runs).
REFRESH_SECONDS = 2.0
# A task's item bytes, at most, once items are big (a single item may pass it):
# a task's arguments travel in its graph, through the scheduler, and dask warns
# about every graph over 10 MB (distributed.admin.large-graph-warning-threshold).
PIECE_BYTES = 8 << 20

class DaskExecutor(Executor):
    """Runs a stage's pieces as tasks on a dask.distributed cluster."""

    sends_to = "a dask worker"

    def __init__(self, spec: StageSpec, port: StagePort) -> None:
        super().__init__(spec, port)
        self.client: Any = None
        self._owned = False  # we made the client from an address: we close it
        self._token = uuid.uuid4().hex
        safe = re.sub(r"[^A-Za-z0-9_]+", "_", spec.name)[:40] or "stage"
        self._prefix = f"ezflow-{safe}-{self._token[:8]}"
        self._payload: Any = None
        self._ac: Any = None
        self._killed_worker: type[BaseException] = RuntimeError
        self._lock = threading.Lock()
        self._futures: dict[str, tuple[Any, Piece]] = {}
        self._ids = itertools.count()
        self._limit = MIN_IN_FLIGHT
        self._refreshed = 0.0
        self._max_items = sys.maxsize  # items per task, from the bytes the last ones took (sender thread)
        # counted under _state:
        self._state = threading.Condition(threading.Lock())
        self._reserved = 0  # pieces taken and not yet settled: the window
        self._outstanding = 0  # futures handed to as_completed and not yet read back
        self._drain = False  # an isolated piece waits for the cluster to drain
        self._quarantine = False  # an isolated piece is running alone

    # -- start ------------------------------------------------------------

    def setup(self) -> None:
        distributed = import_distributed()
        from distributed.scheduler import KilledWorker

        self._killed_worker = KilledWorker
        self.client, self._owned = connect(self.spec, distributed)
        try:
            self._start_remote(distributed)
        except BaseException:
            self._teardown()  # close the stage on the workers where it was built
            self._release()
            raise
        self._spawn(self._send_loop, "dask-send")
        self._spawn(self._collect_loop, "dask-collect", after=self._finish)

    def _start_remote(self, distributed: Any) -> None:
        spec = self.spec
        client = self.client
        from .worker import setup_payload

        try:
            payload = setup_payload(spec, None)
        except Exception as exc:
            raise StageError(spec.name, str(exc)) from exc
        self._payload = client.submit(_hold, payload, key=f"{self._prefix}-payload", pure=False)
        nthreads = client.nthreads()
        # Build the stage on every worker now, so a class that fails to build
        # fails the start (as with local workers) and the first pieces find it
        # warm. Workers that join later build it on their first piece.
        setups = [
            client.submit(
                _setup_remote, self._token, self._payload, key=f"{self._prefix}-setup-{i}",
                workers=[addr], allow_other_workers=True, pure=False,
            )
            for i, addr in enumerate(nthreads)
        ]
        try:
            answers = client.gather(setups)
        except Exception as exc:
            raise StageError(
                spec.name, f"building the stage on the dask workers failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            # A raised error keeps this frame alive: it must not keep the tasks alive on the cluster.
            setups.clear()
        for answer in answers:
            if answer is not None:
                cause, message = answer
                raise StageError(spec.name, message) from cause
        self._set_limit(nthreads)
        self._ac = distributed.as_completed(loop=client.loop)

    def _set_limit(self, nthreads: dict[str, int]) -> None:
        threads = sum(nthreads.values())
        self._limit = max(MIN_IN_FLIGHT, FUTURES_PER_THREAD * threads)
        self._refreshed = time.monotonic()
        # utilisation is per cluster thread; a larger cluster needs more chunks in the stage to cut pieces from
        self.port.set_capacity(max(threads, 1), self._limit)

    # -- sending ------------------------------------------------------------

    def _room(self) -> bool:
        if self._quarantine or self._reserved >= self._limit:
            return False
        return not self._drain or self._reserved == 0

    def _send_loop(self) -> None:
        port = self.port
        while True:
            if time.monotonic() - self._refreshed > REFRESH_SECONDS:
                try:
                    self._set_limit(self.client.nthreads())
                except Exception:
                    self._refreshed = time.monotonic()  # keep the old limit; dask reports real trouble
            piece = port.take(self._room)
            if piece is None or self.cancelled:
                if piece is not None:
                    port.give_back([piece])
                return
            with self._state:
                wait = piece.isolated and self._reserved > 0
                self._drain = wait  # an isolated piece runs alone: wait for the rest to come back
                if not wait:
                    self._reserved += 1
                    self._quarantine = piece.isolated
            if wait:
                port.give_back([piece])
                continue
            self._submit(piece)

    def _submit(self, piece: Piece) -> None:
        while True:
            if len(piece.items) > self._max_items:
                piece, rest = piece.split(self._max_items)
                self.port.give_back([rest])  # sent next
            try:
                data = dumps(piece.items, to_worker=True)
            except Exception as exc:
                self._settled(piece)
                self._unsendable(piece, exc)
                return
            n = len(piece.items)
            self._max_items = max(1, PIECE_BYTES * n // max(len(data), 1))
            if len(data) <= PIECE_BYTES or n == 1:
                break
        piece.id = next(self._ids)
        fut = self.client.submit(
            _run_remote, self._token, self._payload, data, piece.chunk.special, piece.attempts,
            key=f"{self._prefix}-{piece.id}", pure=False, retries=self.spec.retries or None,
        )
        with self._lock:
            late = self.cancelled
            if not late:
                self._futures[fut.key] = (fut, piece)
        if late:
            self._cancel_futures([fut])
            return
        self._ac.add(fut)
        with self._state:
            self._outstanding += 1
            self._state.notify_all()

    def _settled(self, piece: Piece) -> None:
        with self._state:
            self._reserved -= 1
            if piece.isolated:
                self._quarantine = False
        self.port.wake()

    # -- receiving ----------------------------------------------------------

    def _collect_loop(self) -> None:
        while True:
            with self._state:
                while not (self._outstanding or self.closing or self.cancelled):
                    self._state.wait()
                if self.cancelled or not self._outstanding:
                    break  # cancelled, or closed with nothing left out
            # at least one future is in as_completed, so this blocks until it is done
            batch = self._ac.next_batch(block=True)
            with self._state:
                self._outstanding -= len(batch)
            outcomes = self._fetch(batch)
            for fut in batch:
                self._settle(fut, outcomes.get(fut.key))

    def _fetch(self, batch: list) -> dict[str, Any]:
        """Return each future's result bytes or exception, by key."""
        out: dict[str, Any] = {}
        if self.cancelled:
            return out  # nobody wants these results now
        done = [f for f in batch if f.status == "finished"]
        if done:
            try:
                for f, value in zip(done, self.client.gather(done), strict=True):
                    out[f.key] = value
            except Exception:
                pass  # one of them went wrong meanwhile: ask each
        for f in batch:
            if f.key in out:
                continue
            try:
                if f.cancelled():
                    out[f.key] = _Cancelled()
                elif f.status == "error":
                    out[f.key] = f.exception()
                else:
                    # finished, or its result was lost with a worker since:
                    # result() waits while dask computes it again
                    out[f.key] = f.result()
            except BaseException as exc:
                # its traceback holds this frame, and so the futures: drop it
                out[f.key] = exc.with_traceback(None)
        return out

    def _settle(self, fut: Any, outcome: Any) -> None:
        with self._lock:
            entry = self._futures.pop(fut.key, None)
        if entry is None:
            return
        piece = entry[1]
        try:
            if self.cancelled:
                return
            if isinstance(outcome, (bytes, bytearray, memoryview)):
                values, errs, busy, retries = loads(bytes(outcome) if isinstance(outcome, bytearray) else outcome)
                self.port.done(piece, values, errs, busy, retries)
            elif isinstance(outcome, self._killed_worker):
                err = WorkerDied(None, self.spec.name)
                err.args = (
                    f"dask workers of stage {self.spec.name!r} kept dying while running this item "
                    f"(the scheduler gave up on it: {outcome})",
                )
                if piece.isolated:
                    self._worker_died([piece], err)
                else:
                    # it may only have shared a worker with the item that kills: every item of
                    # the piece runs again alone, on a drained cluster, before one is blamed
                    self.port.give_back(piece.singles())
            else:
                self._failed(outcome)
        finally:
            self._settled(piece)

    def _failed(self, outcome: Any) -> None:
        name = self.spec.name
        err: BaseException
        if isinstance(outcome, _SetupFailed):
            err = StageError(name, f"on a new dask worker: {outcome}")
        elif isinstance(outcome, _Cancelled) or outcome is None:
            err = RuntimeError(
                f"stage {name!r}: dask cancelled one of its tasks (was the client closed, "
                "the cluster restarted, or the scheduler lost?)"
            )
        else:
            err = RuntimeError(f"stage {name!r}: a dask task failed: {type(outcome).__name__}: {outcome}")
        if isinstance(outcome, BaseException):
            err.__cause__ = outcome
        self.broken = True
        self.port.fail(err, blame=True)

    # -- ending -------------------------------------------------------------

    def _cancel_futures(self, futs: list[Any]) -> None:
        if futs and self.client is not None:
            try:
                self.client.cancel(futs)
            except Exception:
                pass  # a client already closed has no tasks to run

    def _finish(self) -> None:
        healthy = not (self.cancelled or self.broken)
        try:
            for t in list(self._threads):
                if t is not threading.current_thread():
                    t.join(5.0)  # the sender may still be submitting
            with self._lock:
                self.cancelled = self.cancelled or not healthy
                futs = [f for f, _ in self._futures.values()]
                self._futures.clear()
            self._cancel_futures(futs)
            del futs
            errors = self._teardown()
        finally:
            self._release()  # whatever happened above, the cluster must forget our tasks
        if healthy:
            for exc, tb in errors:
                self._close_failed(exc, tb)

    def _teardown(self) -> list[tuple[BaseException, str]]:
        client = self.client
        if client is None or self._payload is None:
            return []
        try:
            answers = client.run(_teardown_remote, self._token, on_error="ignore")
        except Exception:
            return []  # workers that cannot be reached took their runtimes with them
        return [a for a in answers.values() if isinstance(a, tuple)]

    def _release(self) -> None:
        # Drop every reference to our futures: dask forgets their keys and results.
        self._ac = None
        self._payload = None
        client, self.client = self.client, None
        if self._owned and client is not None:
            try:
                client.close()
            except Exception:
                pass

    def _wakeup(self) -> None:
        with self._state:
            self._state.notify_all()
        super()._wakeup()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            futs = [f for f, _ in self._futures.values()]
        if futs:
            # Off this thread: cancel() must return at once, and the collector,
            # blocked on as_completed, wakes when the futures end as cancelled.
            self._spawn(lambda: self._cancel_futures(futs), "dask-cancel")
        self._wakeup()


class _Cancelled:
    """Stands for a future that ended cancelled."""
