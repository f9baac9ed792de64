"""Dask executor: a stage's pieces run as tasks on a `dask.distributed` cluster.

    driver.next piece --> sender thread --client.submit(_run_remote, token, payload, items)--> scheduler
                           (at most `limit` pieces                                               |
                            in flight: backpressure)                                             v
    driver.on_result() <-- collector thread <--as_completed + gather-- dask worker: runtime cached per
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
"""

from __future__ import annotations

import collections
import itertools
import re
import sys
import threading
import time
import uuid
from typing import Any

from .._engine.channel import Cancelled
from .._core.errors import WorkerDied, pack_exception, short_repr
from . import StageError
from .._transport.serialize import dumps, loads
from .._engine.stage import Piece
from .items import Runtime, build_runtime, close_runtime, run_piece

__all__ = ["Executor", "DaskNotInstalled"]

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
ADDRESS = re.compile(r"^[a-z0-9+]+://")

_ids = itertools.count()


class DaskNotInstalled(ImportError):
    """dask.distributed is needed for ``backend=`` and is not installed."""


def import_distributed() -> Any:
    """Return the `distributed` module, or raise `DaskNotInstalled` with the fix."""
    try:
        import distributed
    except ImportError as exc:
        raise DaskNotInstalled(
            f'backend= runs stages on dask.distributed, which is not installed ({exc}): '
            f'pip install "ezflow[dask]"'
        ) from exc
    return distributed


# -- what runs on a dask worker ---------------------------------------------

_worker_lock = threading.Lock()
_runtimes: dict[tuple[str, str], Runtime] = {}  # (worker address, stage token) -> runtime
# Tokens of stages that ended here: a piece still queued on this worker after a
# cancel must not build the stage again (it would never be closed).
_closed: collections.OrderedDict[str, None] = collections.OrderedDict()
_CLOSED_KEEP = 1024


class _SetupFailed(RuntimeError):
    """The stage could not be built on a dask worker (message says why)."""


def _hold(payload: bytes) -> bytes:
    """Return the stage payload: a task, so dask can recompute it if lost."""
    return payload


def _worker_address() -> str:
    from distributed import get_worker

    return get_worker().address


def _runtime(token: str, payload: bytes) -> Runtime | None:
    key = (_worker_address(), token)
    with _worker_lock:  # one build per worker, even with many threads
        if token in _closed:
            return None
        rt = _runtimes.get(key)
        if rt is not None:
            return rt
        try:
            kind, fn, is_class, when, retries, retry_on, backoff, limiter = loads(payload)
        except BaseException as exc:
            raise _SetupFailed(f"loading the stage on a dask worker raised {type(exc).__name__}: {exc}") from exc
        try:
            rt = build_runtime(kind, fn, is_class, when, retries, retry_on, backoff, pack=True, limiter=limiter)
        except BaseException as exc:
            what = short_repr(fn) + ("()" if is_class else "")
            raise _SetupFailed(f"{what} raised {type(exc).__name__}: {exc}") from exc
        _runtimes[key] = rt
        return rt


def _setup_remote(token: str, payload: bytes) -> tuple[BaseException, str] | None:
    """Build the stage on this worker now; return the packed error if it fails."""
    try:
        _runtime(token, payload)
    except _SetupFailed as exc:
        return pack_exception(exc.__cause__ or exc)[0], str(exc)
    return None


def _run_remote(token: str, payload: bytes, data: bytes, special: bool) -> bytes | None:
    """Run one piece on this worker; return (values, errs, busy, retries) as bytes."""
    rt = _runtime(token, payload)
    if rt is None:
        return None  # the stage was cancelled while this piece waited in the worker
    values, errs, busy, retries = run_piece(rt, loads(data), special)
    try:
        return dumps((values, errs, busy, retries))
    except Exception:
        from .worker import _unpicklable_to_errors

        # one result that cannot travel fails that item, not the whole piece
        _, _, values, errs, busy, retries = _unpicklable_to_errors(("result", 0, values, errs, busy, retries))
        return dumps((values, errs, busy, retries))


def _teardown_remote(token: str, dask_worker: Any = None) -> tuple[BaseException, str] | None:
    """Close this worker's runtime of the stage; return the packed error of close()."""
    with _worker_lock:
        _closed[token] = None
        while len(_closed) > _CLOSED_KEEP:
            _closed.popitem(last=False)
        rt = _runtimes.pop((dask_worker.address, token), None)
    if rt is None:
        return None
    try:
        close_runtime(rt)
    except BaseException as exc:
        return pack_exception(exc)
    return None


# -- the parent side ----------------------------------------------------------


class Executor:
    """Runs a stage's pieces as tasks on a dask.distributed cluster."""

    def __init__(self, spec: Any, driver: Any) -> None:
        self.spec = spec
        self.driver = driver
        self.client: Any = None
        self._owned = False  # we made the client from an address: we close it
        self._token = uuid.uuid4().hex
        safe = re.sub(r"[^A-Za-z0-9_]+", "_", spec.name)[:40] or "stage"
        self._prefix = f"ezflow-{safe}-{self._token[:8]}"
        self._payload: Any = None
        self._ac: Any = None
        self._killed_worker: type = RuntimeError
        self._lock = threading.Lock()
        self._futures: dict[str, tuple[Any, Piece]] = {}
        self._ids = itertools.count()
        self._limit = MIN_IN_FLIGHT
        self._refreshed = 0.0
        self._max_items = sys.maxsize  # items per task, from the bytes the last ones took (sender thread)
        # counted under driver.cond:
        self._reserved = 0  # pieces taken and not yet settled: the window
        self._outstanding = 0  # futures handed to as_completed and not yet read back
        self._held: Piece | None = None  # an isolated piece waiting for the cluster to drain
        self._quarantine = False  # an isolated piece is running alone
        self._stop = False
        self._cancelled = False
        self._broken = False
        self._threads: list[threading.Thread] = []

    # -- start ------------------------------------------------------------

    def setup(self) -> None:
        spec = self.spec
        distributed = import_distributed()
        from distributed.scheduler import KilledWorker

        self._killed_worker = KilledWorker
        self.client = self._connect(distributed)
        try:
            self._start_remote(distributed)
        except BaseException:
            self._teardown()  # close the stage on the workers where it was built
            self._release()
            raise
        for target, name in ((self._send_loop, "send"), (self._collect_loop, "collect")):
            t = threading.Thread(target=target, name=f"ezflow-dask-{name}-{spec.name}", daemon=True)
            self._threads.append(t)
            t.start()

    def _connect(self, distributed: Any) -> Any:
        spec = self.spec
        backend = spec.backend
        if isinstance(backend, distributed.Client):
            if backend.asynchronous:
                raise StageError(spec.name, "backend= needs a synchronous dask Client, not Client(asynchronous=True)")
            if backend.status not in ("running", "connecting", "newly-created"):
                raise StageError(spec.name, f"the dask Client given as backend= is {backend.status}, not running")
            return backend
        if isinstance(backend, str) and backend == "dask":
            try:
                return distributed.get_client()
            except ValueError as exc:
                raise StageError(
                    spec.name,
                    "backend='dask' uses the current dask client and there is none: create one first "
                    "(from dask.distributed import Client; client = Client() for a local cluster, "
                    "or Client('tcp://scheduler:8786')), or pass backend=client or an address",
                ) from exc
        address = getattr(backend, "scheduler_address", None)  # a cluster object (LocalCluster, ...)
        if isinstance(address, str):
            backend = address
        if isinstance(backend, str) and ADDRESS.match(backend):
            try:
                client = distributed.Client(backend, set_as_default=False)
            except Exception as exc:
                raise StageError(
                    spec.name, f"cannot connect to the dask scheduler at {backend}: {type(exc).__name__}: {exc}"
                ) from exc
            self._owned = True
            return client
        raise TypeError(
            "backend must be a dask.distributed Client, a scheduler address such as "
            f"'tcp://127.0.0.1:8786', a dask cluster object, or 'dask' (the current client); got {backend!r}"
        )

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
            raise StageError(spec.name, f"building the stage on the dask workers failed: {type(exc).__name__}: {exc}") from exc
        finally:
            # A raised error keeps this frame alive: it must not keep the tasks alive on the cluster.
            setups.clear()
        for answer in answers:
            if answer is not None:
                exc, message = answer
                raise StageError(spec.name, message) from exc
        self._set_limit(nthreads)
        self._ac = distributed.as_completed(loop=client.loop)

    def _set_limit(self, nthreads: dict) -> None:
        threads = sum(nthreads.values())
        self._limit = max(MIN_IN_FLIGHT, FUTURES_PER_THREAD * threads)
        self._refreshed = time.monotonic()
        d = self.driver
        with d.cond:
            # The driver sizes its window of chunks from `workers`, which
            # means this machine's CPUs for a dask stage: let a larger
            # cluster have enough chunks to cut `limit` pieces from.
            d.window = max(d.window, self._limit)
            d.counters.workers = max(threads, 1)  # utilisation is per cluster thread
            d.cond.notify_all()

    # -- sending ------------------------------------------------------------

    def _send_loop(self) -> None:
        d = self.driver
        try:
            while True:
                if time.monotonic() - self._refreshed > REFRESH_SECONDS:
                    try:
                        self._set_limit(self.client.nthreads())
                    except Exception:
                        self._refreshed = time.monotonic()  # keep the old limit; dask reports real trouble
                with d.cond:
                    while True:
                        if self._cancelled or d.cancelled or self._stop:
                            return
                        piece = self._next_locked()
                        if piece is not None:
                            break
                        if self._held is None and d.no_more_work_locked():
                            return
                        d.cond.wait()
                    self._reserved += 1
                    if piece.isolated:
                        self._quarantine = True
                self._submit(piece)
        except Cancelled:
            return
        except BaseException as exc:  # a bug here must fail the run, not hang it
            d.run.abort(exc)

    def _next_locked(self) -> Piece | None:
        if self._quarantine or self._reserved >= self._limit:
            return None
        if self._held is None:
            piece = self.driver.take_piece_locked()
            if piece is None or not piece.isolated:
                return piece
            self._held = piece
        if self._reserved > 0:
            return None  # an isolated piece runs alone: wait for the rest to come back
        piece, self._held = self._held, None
        return piece

    def _submit(self, piece: Piece) -> None:
        while True:
            if len(piece.items) > self._max_items:
                piece, rest = piece.split(self._max_items)
                self.driver.redo([rest])  # sent next
            try:
                data = dumps(piece.items, to_worker=True)
            except Exception as exc:
                self._unsendable(piece, exc)
                return
            n = len(piece.items)
            self._max_items = max(1, PIECE_BYTES * n // max(len(data), 1))
            if len(data) <= PIECE_BYTES or n == 1:
                break
        piece.id = next(self._ids)
        fut = self.client.submit(
            _run_remote, self._token, self._payload, data, piece.chunk.special,
            key=f"{self._prefix}-{piece.id}", pure=False, retries=self.spec.retries or None,
        )
        with self._lock:
            late = self._cancelled
            if not late:
                self._futures[fut.key] = (fut, piece)
        if late:
            self._cancel_futures([fut])
            return
        self._ac.add(fut)
        d = self.driver
        with d.cond:
            self._outstanding += 1
            d.cond.notify_all()

    def _unsendable(self, piece: Piece, exc: Exception) -> None:
        # Fail only the items that cannot travel; the others still run.
        d = self.driver
        self._settled(piece)
        good = []
        for pos, item in enumerate(piece.items):
            one = Piece(piece.chunk, piece.start + pos, [item], isolated=piece.isolated)
            try:
                dumps(item, to_worker=True)
            except Exception as e:
                err = TypeError(f"the item cannot be sent to a dask worker: {type(e).__name__}: {e}")
                d.on_result(one, [None], [(0, *pack_exception(err), 1)], 0.0)
            else:
                good.append(one)
        if good:
            d.redo(good)

    def _settled(self, piece: Piece) -> None:
        d = self.driver
        with d.cond:
            self._reserved -= 1
            if piece.isolated:
                self._quarantine = False
            d.cond.notify_all()

    # -- receiving ----------------------------------------------------------

    def _collect_loop(self) -> None:
        d = self.driver
        try:
            while True:
                with d.cond:
                    while not (self._outstanding or self._stop or self._cancelled or d.cancelled):
                        d.cond.wait()
                    if self._cancelled or d.cancelled or not self._outstanding:
                        break  # cancelled, or closed with nothing left out
                # at least one future is in as_completed, so this blocks until it is done
                batch = self._ac.next_batch(block=True)
                with d.cond:
                    self._outstanding -= len(batch)
                outcomes = self._fetch(batch)
                for fut in batch:
                    self._settle(fut, outcomes.get(fut.key))
        except Cancelled:
            pass
        except BaseException as exc:  # a bug here must fail the run, not hang it
            self._broken = True
            d.run.abort(exc)
        finally:
            self._finish()

    def _fetch(self, batch: list) -> dict[str, Any]:
        """Return each future's result bytes or exception, by key."""
        out: dict[str, Any] = {}
        if self._cancelled:
            return out  # nobody wants these results now
        done = [f for f in batch if f.status == "finished"]
        if done:
            try:
                for f, value in zip(done, self.client.gather(done)):
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
        d = self.driver
        with self._lock:
            entry = self._futures.pop(fut.key, None)
        if entry is None:
            return
        piece = entry[1]
        try:
            if self._cancelled or d.cancelled:
                return
            if isinstance(outcome, (bytes, bytearray, memoryview)):
                values, errs, busy, retries = loads(outcome)
                d.on_result(piece, values, errs, busy, retries)
            elif isinstance(outcome, self._killed_worker):
                self._killed(piece, outcome)
            else:
                self._failed(outcome)
        finally:
            self._settled(piece)

    def _killed(self, piece: Piece, exc: BaseException) -> None:
        d = self.driver
        if len(piece.items) == 1 or piece.isolated:
            err = WorkerDied(None, self.spec.name)
            err.args = (
                f"dask workers of stage {self.spec.name!r} kept dying while running this item "
                f"(the scheduler gave up on it: {exc})",
            )
            d.on_result(piece, [None], [(0, err, "", 1)], 0.0)
            return
        # One of these items may kill every worker it touches: find it by
        # running each alone; the others come back with their results.
        d.redo([Piece(piece.chunk, piece.start + i, [item], isolated=True) for i, item in enumerate(piece.items)])

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
        self._broken = True
        self.driver.run.abort(err, stage=name)

    # -- ending -------------------------------------------------------------

    def _cancel_futures(self, futs: list) -> None:
        if futs and self.client is not None:
            try:
                self.client.cancel(futs)
            except Exception:
                pass  # a client already closed has no tasks to run

    def _finish(self) -> None:
        healthy = not (self._cancelled or self._broken or self.driver.cancelled)
        try:
            for t in list(self._threads):
                if t is not threading.current_thread():
                    t.join(5.0)  # the sender may still be submitting
            with self._lock:
                self._cancelled = self._cancelled or not healthy
                futs = [f for f, _ in self._futures.values()]
                self._futures.clear()
            self._cancel_futures(futs)
            del futs
            errors = self._teardown()
        finally:
            self._release()  # whatever happened above, the cluster must forget our tasks
        if healthy:
            from .._core.errors import attach_traceback

            for exc, tb in errors:
                err = StageError(self.spec.name, f"close() raised {type(exc).__name__}: {exc}")
                err.__cause__ = attach_traceback(exc, tb)
                self.driver.run.abort(err, late=True)

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

    def close(self) -> None:
        self._stop = True
        with self.driver.cond:
            self.driver.cond.notify_all()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            futs = [f for f, _ in self._futures.values()]
        if futs:
            # Off this thread: cancel() must return at once, and the collector,
            # blocked on as_completed, wakes when the futures end as cancelled.
            t = threading.Thread(target=self._cancel_futures, args=(futs,), name="ezflow-dask-cancel", daemon=True)
            t.start()
            self._threads.append(t)  # once started: join() may run at any moment
        with self.driver.cond:
            self.driver.cond.notify_all()

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(max(0.0, end - time.monotonic()))


class _Cancelled:
    """Stands for a future that ended cancelled."""
