"""A worker process's side: its function's bootstrap, and the Q handles that talk to the owner's broker."""

from __future__ import annotations

import itertools
import os
import pickle
import queue
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .._core.errors import WorkerDied, pack_exception
from .._core.forks import at_fork
from .._transport.serialize import dumps, dumps_by_value, dumps_fn, loads
from .msg import _COUNT, _DONE, _EMPTY, _GET, _HEAD, _ITEM, _PUT, _SIZE, _TIMEOUT, _frame


class _Reply:
    __slots__ = ("body", "event", "op")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.op = 0
        self.body: memoryview | None = None


class _Child:
    """A worker process's connection to the process that started it."""

    current: _Child | None = None

    def __init__(self, conn: Connection, owner: int) -> None:
        self.owner = owner
        self._conn = conn
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Reply] = {}
        self._reqs = itertools.count(1)
        self._closing = False
        threading.Thread(target=self._receive, name="ezflow-q-receiver", daemon=True).start()

    @classmethod
    def for_owner(cls, owner: int) -> _Child:
        child = cls.current
        if child is None or child.owner != owner:
            raise RuntimeError(
                f"this Q belongs to process {owner}; it works there and in the "
                "workers that process started with run()"
            )
        return child

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            self._conn.send_bytes(frame)

    def _receive(self) -> None:
        while True:
            try:
                data = self._conn.recv_bytes()
            except (EOFError, OSError):
                if self._closing:
                    return
                # The owner is gone (maybe SIGKILLed): nobody will read our
                # results or stop us, and daemon cleanup did not run.
                os._exit(1)
            view = memoryview(data)
            op, req, _ = _HEAD.unpack_from(view)
            reply = self._pending.pop(req, None)
            if reply is not None:
                reply.op, reply.body = op, view[_HEAD.size :]
                reply.event.set()

    def put(self, qid: int, raw: bytes) -> None:
        self._send(_frame(_PUT, 0, qid, raw))

    def get(self, qid: int, timeout: float | None) -> memoryview:
        req = next(self._reqs)
        reply = self._pending[req] = _Reply()
        # the broker keeps the clock: no reply can race a cancelled request
        self._send(_frame(_GET, req, qid, _TIMEOUT.pack(-1.0 if timeout is None else timeout)))
        reply.event.wait()
        if reply.op == _ITEM:
            assert reply.body is not None
            return reply.body
        if reply.op == _EMPTY:
            raise queue.Empty
        raise RuntimeError(bytes(reply.body or b"").decode())

    def size(self, qid: int) -> int:
        req = next(self._reqs)
        reply = self._pending[req] = _Reply()
        self._send(_frame(_SIZE, req, qid))
        reply.event.wait()
        assert reply.body is not None
        return int(_COUNT.unpack_from(reply.body)[0])

    def done(self, error: BaseException | None) -> None:
        self._closing = True
        body = b"" if error is None else dumps(pack_exception(error))
        try:
            self._send(_frame(_DONE, 0, 0, body))
        except OSError:  # the owner is gone; nobody to tell
            pass


class _Call:
    """What a worker process runs; sent by value where a child needs that."""

    __slots__ = ("args", "blobs", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.blobs: tuple[bytes, bytes] | None = None

    def __reduce__(self) -> tuple:
        # Called by spawn and forkserver only (fork copies memory). We are
        # inside Process.start here, so multiprocessing objects among the
        # arguments (a Lock, a Pipe end) may be pickled for the child.
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        try:
            fn_blob = dumps_fn(self.fn)
        except TypeError as exc:
            raise TypeError(
                f"cannot send {name} to a worker process: {exc.__cause__ or exc}. "
                "Use run_thread(), or define it at module level."
            ) from exc
        try:
            args_blob = _dump_args((self.args, self.kwargs))
        except TypeError as exc:
            raise TypeError(
                f"cannot send the arguments of {name} to a worker process: "
                f"{exc.__cause__ or exc}. Use run_thread(), or pass picklable arguments."
            ) from exc
        return (_load_call, (fn_blob, args_blob))

    def resolve(self) -> tuple[Callable[..., Any], tuple, dict]:
        if self.blobs is not None:
            fn_blob, args_blob = self.blobs
            self.fn = loads(fn_blob)
            _publish_main_classes(self.fn)
            if args_blob[:1] == b"F":
                self.args, self.kwargs = pickle.loads(memoryview(args_blob)[1:])
            else:
                self.args, self.kwargs = loads(args_blob)
            self.blobs = None
        return self.fn, self.args, self.kwargs


def _publish_main_classes(fn: Any) -> None:
    # dill rebuilt the owner's __main__ classes here by value; pickle could
    # not find them by name, so an exception or message of such a class would
    # go back by value too and arrive as a look-alike class (an `except
    # MyError` in the owner would miss it). Named in our __main__, they go
    # back by reference and the owner gets its own class.
    main = sys.modules.get("__main__")
    if main is None:
        return
    todo, seen = [fn], set()
    while todo:
        obj = todo.pop()
        obj = getattr(obj, "__func__", None) or getattr(obj, "func", None) or obj
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for value in list((getattr(obj, "__globals__", None) or {}).values()):
            if getattr(value, "__module__", None) not in ("__main__", "__mp_main__"):
                continue
            if isinstance(value, type) and "." not in value.__qualname__ and "<" not in value.__qualname__:
                setattr(main, value.__qualname__, value)
            elif hasattr(value, "__globals__"):
                todo.append(value)


def _dump_args(obj: Any) -> bytes:
    try:
        data = bytes(ForkingPickler.dumps(obj, protocol=5))
    except Exception:
        data = b""
    # pickled by reference to __main__: a spawned child (or a notebook's) may
    # not have it, so send such arguments by value
    if data and b"__main__" not in data:
        return b"F" + data
    return dumps_by_value(obj)


def _load_call(fn_blob: bytes, args_blob: bytes) -> _Call:
    # Decoding waits for resolve(), inside the worker's try: a function that
    # cannot load then fails the worker visibly instead of killing it.
    call = _Call.__new__(_Call)
    call.fn, call.args, call.kwargs = None, (), {}  # type: ignore[assignment]
    call.blobs = (fn_blob, args_blob)
    return call


def _bootstrap(conn: Connection, owner: int, call: _Call) -> None:
    child = _Child.current = _Child(conn, owner)
    error: BaseException | None = None
    try:
        fn, args, kwargs = call.resolve()
        fn(*args, **kwargs)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            error = WorkerDied(exc.code if isinstance(exc.code, int) else 1)
    except BaseException as exc:
        error = exc
    child.done(error)
    if error is not None:
        code = error.exitcode if isinstance(error, WorkerDied) else 1
        sys.exit(code)



def _after_fork_in_child() -> None:
    _Child.current = None


at_fork(after_in_child=_after_fork_in_child)
