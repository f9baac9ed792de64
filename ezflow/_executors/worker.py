"""The loop a worker process runs, and the messages it speaks.

    parent                                   worker process
    ("setup", token, payload,      ----->    build the stage (instantiate a class here)
      want_ready)                  <-----    ("ready", token) if want_ready | ("setup_failed", token, exc, tb)
    ("task", piece_id, token,      ----->    run_piece()
      items, special, tried)       <-----    ("result", piece_id, values, errs, busy, retries)
    ("teardown", token,            ----->    close() a class stage
      want_reply)                  <-----    ("closed", token, exc_or_None, tb) if want_reply
    ("exit",)                      ----->    return

A function stage asks for neither answer: its tasks queue behind the setup,
and a failed setup is still reported.

One duplex pipe per worker, so the parent always knows which pieces a
worker holds: when it dies, those are the pieces to account for. The
worker ignores SIGINT (the parent handles Ctrl-C and stops its workers),
and exits by itself when its parent disappears.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

from .._core.errors import RemoteError, describe, pack_exception
from .._transport import set_worker_parent
from .._transport.serialize import dumps, loads
from .items import Runtime, build_runtime, close_runtime, run_piece

__all__ = ["setup_payload", "worker_main"]

PARENT_CHECK_SECONDS = 0.5


def setup_payload(spec: Any, limiter: Any = None) -> bytes:
    """Serialize what a worker needs to build a stage."""
    from .._transport.serialize import dumps_by_value

    fields = (
        spec.kind,
        spec.fn,
        spec.is_class,
        spec.when,
        spec.retries,
        spec.retry_on,
        spec.backoff,
        limiter,
    )
    return dumps(fields) if _plain(fields) else dumps_by_value(fields)


def _plain(fields: tuple) -> bool:
    from .._transport.serialize import _by_value

    kind, fn, is_class, when, retries, retry_on, backoff, limiter = fields
    return not (
        _by_value(fn) or (when is not None and _by_value(when)) or any(_by_value(t) for t in retry_on)
    )


def _watch_parent(ppid: int) -> None:
    # A SIGKILLed parent cannot stop us; a reparented worker stops itself.
    # (Under forkserver our parent is the server, which exits with its owner.)
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != ppid:
            os._exit(1)


def _send(conn: Any, msg: tuple) -> None:
    try:
        data = dumps(msg)
    except Exception:
        if msg[0] != "result":
            raise
        data = dumps(_unpicklable_to_errors(msg))
    try:
        conn.send_bytes(data)
    except (BrokenPipeError, ConnectionResetError):
        raise SystemExit(0) from None  # the parent is gone: nobody to answer, nothing to print


def _unpicklable_to_errors(msg: tuple) -> tuple:
    # One result that cannot travel must fail that item, not the whole piece.
    op, pid, values, errs, busy, retries = msg
    errs = list(errs)
    for pos, value in enumerate(values):
        try:
            dumps(value)
        except Exception as exc:
            err = TypeError(f"the result cannot be sent back to the parent: {describe(exc)}")
            values[pos] = None
            errs.append((pos, *pack_exception(err), 1))
    for i, (pos, error, tb, attempts) in enumerate(errs):
        try:
            dumps(error)
        except Exception:
            # keep its type name, message and the worker's traceback text
            errs[i] = (pos, RemoteError(type(error).__qualname__, describe(error).partition(": ")[2]), tb, attempts)
    return (op, pid, values, errs, busy, retries)


def _result_scope(shm: list) -> Any:
    # Big result arrays go back through shared memory (see _shm); only where numpy is in use.
    if "numpy" not in sys.modules:
        return contextlib.nullcontext()
    from .._transport import shm as _shm

    return _shm.result_scope(shm[0] if shm else None)


def worker_main(conn: Any, owner: int) -> None:
    """Serve setup/task/teardown messages until told to exit or the pipe closes."""
    set_worker_parent(owner)  # the parent owns the shared-memory segments made here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_watch_parent, args=(os.getppid(),), daemon=True, name="ezflow-parent-watch"
    ).start()
    runtimes: dict[int, Runtime] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            msg = loads(data)
        except Exception as exc:
            # Only a task carries the user's items; it pickled in the parent but does not
            # load here. Its answer is due next (one answer per task, in order): say why.
            _send(conn, ("unloadable", *pack_exception(exc)))
            continue
        finally:
            data = None
        op = msg[0]
        if op == "task":
            _, pid, token, items, special, tried, *shm = msg
            rt = runtimes.get(token)
            if rt is None:  # its setup never arrived: the parent is tearing down (at exit); leave quietly
                raise SystemExit(1)
            values, errs, busy, retries = run_piece(rt, items, special, tried)
            with _result_scope(shm):
                _send(conn, ("result", pid, values, errs, busy, retries))
            del msg, items, values, errs  # let go of shared inputs now: their owner reuses them
            rt = None
        elif op == "setup":
            _, token, payload, want_ready = msg  # a function stage does not wait for "ready"
            try:
                kind, fn, is_class, when, retries, retry_on, backoff, limiter = loads(payload)
                runtimes[token] = build_runtime(
                    kind, fn, is_class, when, retries, retry_on, backoff, pack=True, limiter=limiter
                )
            except BaseException as exc:
                _send(conn, ("setup_failed", token, *pack_exception(exc)))
            else:
                if want_ready:
                    _send(conn, ("ready", token))
            payload = fn = when = limiter = None  # the runtime keeps what it needs
        elif op == "teardown":
            _, token, want_reply = msg  # only a class stage's close() has anything to report
            rt = runtimes.pop(token, None)
            try:
                if rt is not None:
                    close_runtime(rt)
                reply: tuple = (None, "")
            except BaseException as exc:
                reply = pack_exception(exc)
            if want_reply:
                _send(conn, ("closed", token, *reply))
            rt = None  # a stage's closure (and the shared arrays it holds) goes now
        elif op == "exit":
            return
