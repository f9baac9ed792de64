"""The loop a worker process runs: it answers the records of `wire` (drawn there).

    Setup -> Ready | SetupFailed      Task -> Partial* Result | Unloadable      Teardown -> Closed      Exit

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
from .._plan.chain import Chain
from .._transport import idle, set_worker_parent
from .._transport.serialize import dumps, dumps_view, loads
from .deadline import Marker
from .inbox import Inbox
from .items import Runtime, build_stage, close_runtime
from .port import ItemError
from .reporting import run_piece
from .wire import (
    Closed,
    Exit,
    Partial,
    Ready,
    Result,
    Setup,
    SetupFailed,
    StageSetup,
    Task,
    Teardown,
    Unloadable,
    decode,
    encode,
)

__all__ = ["sendable_result", "setup_payload", "worker_main"]

PARENT_CHECK_SECONDS = 0.5
IDLE_SECONDS = 1.0  # no message for this long: let go of shared-memory mappings kept for the next item


def setup_payload(spec: Any, limiter: Any = None) -> bytes:
    """Serialize what a worker needs to build a stage."""
    from .._transport.serialize import dumps_by_value

    setup = StageSetup(
        kind=spec.kind,
        fn=spec.fn,
        is_class=spec.is_class,
        when=spec.when,
        retries=spec.retries,
        retry_on=spec.retry_on,
        backoff=spec.backoff,
        limiter=limiter,
    )
    return dumps(setup) if _plain(setup) else dumps_by_value(setup)


def _plain(s: StageSetup) -> bool:
    from .._transport.serialize import _by_value

    return not (
        _by_value(s.fn) or (s.when is not None and _by_value(s.when)) or any(_by_value(t) for t in s.retry_on)
    )


def _watch_parent(ppid: int) -> None:
    # A SIGKILLed parent cannot stop us; a reparented worker stops itself.
    # (Under forkserver our parent is the server, which exits with its owner.)
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != ppid:
            os._exit(1)


def _send(conn: Any, msg: Any) -> None:
    _send_bytes(conn, _pickle(msg))


def _pickle(msg: Any) -> bytes | memoryview:
    try:
        return dumps_view(encode(msg))
    except Exception:
        if type(msg) is not Result and type(msg) is not Partial:
            raise
        values, errs = sendable_result(msg.values, msg.errs)
        return dumps_view(encode(msg._replace(values=values, errs=errs)))


def _send_bytes(conn: Any, data: bytes | memoryview) -> None:
    try:
        conn.send_bytes(data)
    except (BrokenPipeError, ConnectionResetError):
        raise SystemExit(0) from None  # the parent is gone: nobody to answer, nothing to print


def sendable_result(values: list[Any], errs: list[ItemError]) -> tuple[list[Any], list[ItemError]]:
    """Return a piece's values and errors with what cannot be pickled turned into item failures.

    One result that cannot travel must fail that item, not the whole piece.
    """
    errs = list(errs)
    for pos, value in enumerate(values):
        try:
            dumps(value)
        except Exception as exc:
            err = TypeError(f"the result cannot be sent back to the parent: {describe(exc)}")
            values[pos] = None
            errs.append(ItemError(pos, *pack_exception(err), 1))
    for i, e in enumerate(errs):
        try:
            dumps(e.error)
        except Exception:
            # keep its type name, message and the worker's traceback text
            remote = RemoteError(type(e.error).__qualname__, describe(e.error).partition(": ")[2])
            e = errs[i] = e._replace(error=remote)
        if e.step:  # a fused step's input (plan.chain) that cannot travel: its repr stands in
            try:
                dumps(e.item)
            except Exception:
                errs[i] = e._replace(item=_Unsent(e.item))
    return values, errs


class _Unsent:
    """Stands in for an item that could not be sent back: its repr, as the failure shows it."""

    __slots__ = ("text",)

    def __init__(self, item: Any) -> None:
        try:
            self.text = repr(item)
        except Exception:
            self.text = f"<{type(item).__qualname__} object: its repr failed>"

    def __repr__(self) -> str:
        return self.text


def _result_scope(share: tuple | None) -> Any:
    # Big result arrays go back through shared memory (see _transport.shm); only where numpy is in use.
    if "numpy" not in sys.modules:
        return contextlib.nullcontext()
    from .._transport import shm as _shm

    return _shm.result_scope(share)


class _Reporter:
    """Send a task's first results back while the rest run (`wire.Partial`)."""

    __slots__ = ("chain", "conn", "piece_id", "share")

    def __init__(self, conn: Any, piece_id: int, share: tuple | None, chain: Chain | None) -> None:
        self.conn = conn
        self.piece_id = piece_id
        self.chain = chain
        # the spares lent for the result stay for the final answer: big arrays here go in new segments
        self.share = None if share is None else (share[0], ())

    def __call__(self, values: list[Any], errs: list[ItemError], busy: float, retries: int) -> None:
        spent = busy if self.chain is None else self.chain.split(busy)
        with _result_scope(self.share):
            answer = _pickle(Partial(self.piece_id, values, errs, spent, retries))
            _send_bytes(self.conn, answer)


def worker_main(conn: Any, owner: int, slot: Any = None) -> None:
    """Serve setup/task/teardown messages until told to exit or the pipe closes.

    `slot`: where this worker says which item it runs since when (`deadline`), for stages with a time limit.
    """
    marker = Marker(slot) if slot is not None else None
    set_worker_parent(owner)  # the parent owns the shared-memory segments made here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(
        target=_watch_parent, args=(os.getppid(),), daemon=True, name="ezflow-parent-watch"
    ).start()
    runtimes: dict[int, Runtime] = {}
    inbox = Inbox(conn)  # a big task is read into the buffer the last one used (inbox.py)
    while True:
        try:
            if not conn.poll(IDLE_SECONDS):
                idle()
                inbox.drop()
            data = inbox.recv()
        except (EOFError, OSError):
            return
        try:
            msg = decode(loads(data))
        except Exception as exc:
            # Only a task carries the user's items; it pickled in the parent but does not
            # load here. Its answer is due next (one answer per task, in order): say why.
            _send(conn, Unloadable(*pack_exception(exc)))
            continue
        finally:
            del data  # a view of the inbox's buffer: the next message is read into it
        kind = type(msg)
        if kind is Task:
            rt = runtimes.get(msg.token)
            if rt is None:  # its setup never arrived: the parent is tearing down (at exit); leave quietly
                raise SystemExit(1)
            if rt.marker is not None:
                rt.marker.begin(msg.piece_id)
            piece_id, share = msg.piece_id, msg.share
            report = _Reporter(conn, piece_id, share, rt.chain)
            values, errs, busy, retries = run_piece(rt, msg.items, msg.special, msg.tried, report)
            # fused stages (plan.chain): the piece's seconds, step by step, for each stage's figures
            spent = busy if rt.chain is None else rt.chain.split(busy)
            with _result_scope(share):
                answer = _pickle(Result(piece_id, values, errs, spent, retries))
                # let go of shared inputs before answering: their owner finds them free
                # when the answer arrives, and reuses them at once
                del msg, values, errs
                _send_bytes(conn, answer)
            del answer
            rt = None
        elif kind is Setup:  # a function stage does not wait for Ready
            try:
                runtimes[msg.token] = build_stage(loads(msg.payload))
                if msg.timed:
                    runtimes[msg.token].marker = marker
            except BaseException as exc:
                _send(conn, SetupFailed(msg.token, *pack_exception(exc)))
            else:
                if msg.want_ready:
                    _send(conn, Ready(msg.token))
            msg = None  # the runtime keeps what it needs
        elif kind is Teardown:  # only a class stage's close() has anything to report
            rt = runtimes.pop(msg.token, None)
            try:
                if rt is not None:
                    close_runtime(rt)
                error, tb = None, ""
            except BaseException as exc:
                error, tb = pack_exception(exc)
            if msg.want_reply:
                _send(conn, Closed(msg.token, error, tb))
            rt = None  # a stage's closure (and the shared arrays it holds) goes now
        elif kind is Exit:
            return
