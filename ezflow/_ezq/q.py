"""ezq-compatible queues and workers: `Q`, `Msg`, `run`, `run_thread`.

    owner process (made the Q)                           worker process (run)
    +------------------------------------+               +--------------------------+
    | Q state: the one deque of messages |   one duplex  | fn(q, out, ...)          |
    |  ^  parent code and run_thread     |   pipe per    |   for msg in q:  --GET-->|
    |  |  workers use it directly        |   worker      |            <--ITEM/EMPTY-|
    |  v                                 |               |   out.put(x)     --PUT-->|
    | broker thread: reads every worker  | <===========> |   return / raise --DONE->|
    |  pipe at once; stores PUTs, serves |               | receiver thread: replies;|
    |  GETs (and their timeouts), keeps  |               |  EOF = owner died, so    |
    |  DONE (the worker's exception)     |               |  the worker exits        |
    +------------------------------------+               +--------------------------+

Why this shape, against ezq's defects:

- A Q's messages live only in the process that created it. A worker reaches
  them through its own pipe, and the broker reads every pipe all the time, so
  a worker's ``put`` never blocks and a worker never waits at exit for a
  reader: the multiprocessing "join before drain" deadlock cannot happen,
  whatever the size of what was put. Nothing is moved out of a queue that
  another worker reads (a parent that drained queues while joining would
  steal a downstream worker's input).
- `Q` pickles as its id, so it crosses fork, spawn and forkserver alike.
  There is no semaphore, so nothing is ever created in /dev/shm.
- Functions travel by value with dill when a child could not import them
  (lambdas, closures, ``__main__`` and notebook code); see `_serialize`.
- A worker's exception travels back in DONE (type kept, traceback text
  chained as ``__cause__``); `Q.stop` raises it once every worker is joined.
- Only the owner holds the owner end of a worker's pipe (_core.procs's fork hook closes
  inherited copies), so when the owner dies, even by SIGKILL, the worker reads
  EOF and exits at once. Workers are daemonic for the ordinary exits.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import multiprocessing
import os
import pickle
import queue
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any, Literal

from .._core.env import default_start_method
from .._core.errors import WorkerDied, attach_traceback, pack_exception
from .._core.procs import check_start_method, start_child
from .._transport.serialize import dumps, dumps_by_value, dumps_fn, loads

__all__ = ["END_MSG", "Msg", "Q", "Worker", "run", "run_thread"]

QKind = Literal["process", "thread"]
_KINDS = ("process", "thread")


@dataclass
class Msg:
    """A message on a `Q`.

    Attributes:
        data: the payload.
        kind: an optional tag; the kind ``"END"`` marks the end of a queue.
        order: an optional position, used by `Q.sorted`.
    """

    data: Any = None
    kind: str = ""
    order: int = 0


END_MSG: Msg = Msg(kind="END")
"""The message that ends iteration over a `Q` (any message of kind "END" does)."""

# -- wire format between a worker and the broker -----------------------------
# header: op, request id, queue id; then the op's body (a pickled Msg, ...)
_HEAD = struct.Struct("!BqQ")
_TIMEOUT = struct.Struct("!d")  # GET body: seconds, < 0 = wait forever
_PUT, _GET, _DONE = 1, 2, 3  # worker -> broker
_ITEM, _EMPTY, _ERROR = 11, 12, 13  # broker -> worker


def _frame(op: int, req: int, qid: int, body: bytes | memoryview = b"") -> bytes:
    return b"".join((_HEAD.pack(op, req, qid), body))


# -- owner side: queue state and registry ------------------------------------


class _Waiter:
    """A worker's GET that no message has answered yet."""

    __slots__ = ("channel", "done", "req")

    def __init__(self, channel: _Channel, req: int) -> None:
        self.channel = channel
        self.req = req
        self.done = False


class _QState:
    """The messages of one queue, in the process that owns it."""

    __slots__ = ("cond", "items", "orphan", "qid", "waiters")

    def __init__(self, qid: int) -> None:
        self.qid = qid
        # pickled messages for a process Q, Msg objects for a thread Q
        self.items: collections.deque[Any] = collections.deque()
        self.cond = threading.Condition(threading.Lock())
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.orphan = False

    def push(self, item: Any) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify()
            remote = bool(self.waiters)
        if remote:  # a worker is waiting: the broker hands it over
            _Broker.poke(self)

    def pop(self, timeout: float | None) -> Any:
        with self.cond:
            if not self.cond.wait_for(lambda: self.items, timeout):
                raise queue.Empty
            return self.items.popleft()


_ids = itertools.count(1)
_registry_lock = threading.Lock()
_states: dict[int, _QState] = {}  # process Qs this process owns, by id
_handles: weakref.WeakValueDictionary[int, Q] = weakref.WeakValueDictionary()


_released: collections.deque[int] = collections.deque()  # Qs whose last handle died, to settle


def _release(qid: int, owner: int) -> None:
    # The user's last reference to a Q is gone. This runs from a weakref
    # finalizer, maybe inside the garbage collector while this very thread
    # holds _registry_lock (it allocates): never wait for the lock; whoever
    # holds it next settles the release.
    if os.getpid() != owner:
        return
    _released.append(qid)
    if _registry_lock.acquire(blocking=False):
        try:
            _settle_released()
        finally:
            _registry_lock.release()


def _settle_released() -> None:
    """Forget released Qs (holding _registry_lock).

    A worker may still hold one (an inline Q() passed only to workers), so
    it is kept, as an orphan, while any runs.
    """
    while _released:
        qid = _released.popleft()
        state = _states.get(qid)
        if state is None or qid in _handles:
            continue
        if _Broker.busy():
            state.orphan = True
        else:
            del _states[qid]


def _purge_orphans() -> None:
    with _registry_lock:
        _settle_released()
        for qid in [qid for qid, st in _states.items() if st.orphan]:
            _states.pop(qid, None)


# -- the public queue ---------------------------------------------------------


class Q:
    """A queue of `Msg` between the parent, thread workers and process workers.

    ``Q()`` (kind "process") can be passed to `run` workers under any start
    method, to `run_thread` workers, and inside messages to them; its
    messages are pickled. ``Q("thread")`` stores messages as they are (no
    pickling, so it can carry unpicklable things) and works only inside the
    process that created it.
    """

    __slots__ = ("__weakref__", "_cache", "_kind", "_owner", "_qid", "_state")

    def __init__(self, kind: QKind = "process") -> None:
        """Create an empty queue.

        Args:
            kind: "process" (default) or "thread".

        Raises:
            ValueError: `kind` is not one of those two.
        """
        if kind not in _KINDS:
            raise ValueError(f"Q kind must be 'process' or 'thread', got {kind!r}")
        self._kind: str = kind
        self._owner = os.getpid()
        self._qid = next(_ids)
        self._state: _QState | None = _QState(self._qid)
        self._cache: list[Msg] | None = None
        if kind == "process":
            with _registry_lock:
                _states[self._qid] = self._state
                _handles[self._qid] = self
                _settle_released()
            weakref.finalize(self, _release, self._qid, self._owner).atexit = False

    @property
    def kind(self) -> str:
        """Return "process" or "thread"."""
        return self._kind

    def __repr__(self) -> str:
        return f"Q({self._kind!r}, id={self._qid}, owner={self._owner})"

    def __reduce__(self) -> tuple:
        if self._kind == "thread":
            raise TypeError(
                "a Q('thread') cannot be sent to another process; use Q() (kind 'process') with run() workers"
            )
        return (_rebuild_q, (self._qid, self._owner))

    def _local(self) -> _QState | None:
        # None: we are a worker, and the owner is reached through the broker
        if os.getpid() == self._owner:
            return self._state
        if self._kind == "thread":
            raise RuntimeError(
                "a Q('thread') works only inside the process that created it; "
                "use Q() (kind 'process') with run() workers"
            )
        return None

    def put(self, data: Any = None, *, kind: str = "", order: int = 0) -> Q:
        """Put a message on the queue; never blocks.

        Args:
            data: the payload; a `Msg` is put as it is (then `kind` and
                `order` are not used).
            kind: the message's kind.
            order: the message's order (see `sorted`).

        Returns:
            This queue, for chaining.
        """
        msg = data if isinstance(data, Msg) else Msg(data, kind, order)
        state = self._local()
        if self._kind == "thread":
            assert state is not None
            state.push(msg)
            return self
        raw = dumps(msg)
        if state is not None:
            state.push(raw)
        else:
            _Child.for_owner(self._owner).put(self._qid, raw)
        return self

    def get(self, block: bool = True, timeout: float | None = None) -> Msg:
        """Remove and return the next message, the end marker included.

        Args:
            block: wait for a message; if False, `timeout` is 0.
            timeout: seconds to wait; None waits as long as it takes.

        Returns:
            The message.

        Raises:
            queue.Empty: no message came in time.
            ValueError: `timeout` is negative.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
        limit = timeout if block else 0.0
        state = self._local()
        if state is not None:
            item = state.pop(limit)
        else:
            item = _Child.for_owner(self._owner).get(self._qid, limit)
        return item if self._kind == "thread" else loads(item)

    def __iter__(self) -> Iterator[Msg]:
        """Yield messages until an end marker, which is consumed, not yielded."""
        while True:
            msg = self.get()
            if msg.kind == END_MSG.kind:
                return
            yield msg

    def sorted(self, start: int = 0) -> Iterator[Msg]:
        """Yield messages by `Msg.order`, from `start` up, until the end marker.

        Orders are expected to count up by one. A message waits until all
        orders before it have been yielded; what is still waiting at the end
        (after a gap), and any message whose order was already passed (a
        duplicate, or below `start`), is yielded at the end, by order.

        Args:
            start: the first order to yield.

        Yields:
            The messages.
        """
        expected = start
        waiting: list[tuple[int, int, Msg]] = []
        late: list[tuple[int, int, Msg]] = []
        for seq, msg in enumerate(self):
            heapq.heappush(waiting, (msg.order, seq, msg))
            # a stale order at the top must not hold back the ones behind it
            while waiting and waiting[0][0] <= expected:
                entry = heapq.heappop(waiting)
                if entry[0] == expected:
                    expected += 1
                    yield entry[2]
                else:
                    late.append(entry)
        for _, _, msg in sorted(waiting + late, key=lambda e: (e[0], e[1])):
            yield msg

    def items(self, cache: bool = False, sort: bool = False) -> Iterator[Msg]:
        """End the queue, then return an iterator over its messages.

        Args:
            cache: keep the messages, so later calls return the same ones
                (the first call's `sort` decides their order).
            sort: yield them by `Msg.order` (see `sorted`).

        Returns:
            An iterator over the messages up to the end marker.
        """
        if cache:
            if self._cache is None:
                self.end()
                self._cache = list(self.sorted() if sort else self)
            return iter(self._cache)
        self.end()
        return self.sorted() if sort else iter(self)

    def end(self) -> Q:
        """Put the end marker: one reader stops when it gets to it.

        Returns:
            This queue, for chaining.
        """
        return self.put(END_MSG)

    def stop(self, workers: Worker | Iterable[Worker]) -> Q:
        """End the queue once per worker, join them all, then raise a failure.

        Args:
            workers: the workers that read this queue.

        Returns:
            This queue, for chaining.

        Raises:
            BaseException: the exception of the first failed worker (in the
                order given), with its traceback text as ``__cause__``; a
                note names the other workers that failed.
        """
        group = [workers] if isinstance(workers, Worker) else list(workers)
        for _ in group:
            self.end()
        for w in group:
            w.join()
        failed = [w for w in group if w.exception is not None]
        if failed:
            exc = failed[0].exception
            assert exc is not None
            if len(failed) > 1 and hasattr(exc, "add_note"):
                others = ", ".join(f"{w.name} ({type(w.exception).__name__})" for w in failed[1:])
                exc.add_note(f"other workers failed too: {others}")
            raise exc
        return self


def _rebuild_q(qid: int, owner: int) -> Q:
    if os.getpid() == owner:
        with _registry_lock:
            handle = _handles.get(qid)
            if handle is not None:
                return handle
            state = _states.get(qid)
            if state is None:
                raise RuntimeError(f"Q {qid} no longer exists in this process")
            state.orphan = False
    else:
        state = None
    q = Q.__new__(Q)
    q._qid, q._kind, q._owner, q._state, q._cache = qid, "process", owner, state, None
    if state is not None:
        with _registry_lock:
            _handles[qid] = q
            _settle_released()
        weakref.finalize(q, _release, qid, owner).atexit = False
    return q


# -- owner side: the broker ---------------------------------------------------


class _Channel:
    """The owner's end of one worker process's pipe."""

    def __init__(self, conn: Connection, proc: Any) -> None:
        self.conn = conn
        self.proc = proc
        self.sentinel: int = proc.sentinel
        self.eof = False  # nothing more to read
        self.closed = False  # nothing more to send (DONE came, or the pipe broke)
        self.done = False  # DONE came
        self.error: bytes = b""  # DONE's body: the packed exception, if any
        self.finished = threading.Event()  # the process exited and all it sent is in


class _Broker:
    """One thread per owner process serving all its Qs to all its workers."""

    _instance: _Broker | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> _Broker:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @classmethod
    def poke(cls, state: _QState) -> None:
        broker = cls._instance
        if broker is not None:
            with broker._mutex:
                broker._dirty.add(state)
            broker._wake()

    @classmethod
    def busy(cls) -> bool:
        broker = cls._instance
        return broker is not None and bool(broker._channels)

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._channels: list[_Channel] = []
        self._dirty: set[_QState] = set()
        self._timers: list[tuple[float, int, _QState, _Waiter]] = []
        self._seq = itertools.count()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._serve, name="ezflow-q-broker", daemon=True)
        self._thread.start()

    def add(self, channel: _Channel) -> None:
        with self._mutex:
            self._channels.append(channel)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # already full of wake-ups: one is enough
            pass

    def _serve(self) -> None:
        while True:
            try:
                self._round()
            except Exception:  # a bug here must not stall every worker silently
                import traceback

                traceback.print_exc()
                time.sleep(0.1)

    def _round(self) -> None:
        with self._mutex:
            channels = list(self._channels)
            dirty, self._dirty = self._dirty, set()
        for state in dirty:
            self._dispatch(state)
        timeout = self._expire()
        conns = {ch.conn: ch for ch in channels if not ch.eof}
        sentinels = {ch.sentinel: ch for ch in channels}
        ready = set(wait([self._wake_r, *conns, *sentinels], timeout))
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        for conn, ch in conns.items():
            if conn in ready:
                self._read(ch, limit=64)
        for fd, ch in sentinels.items():
            if fd in ready:
                self._finish(ch)

    def _read(self, ch: _Channel, limit: int | None) -> None:
        # limit: at most this many messages, so one busy worker cannot starve the rest
        count = 0
        try:
            while limit is None or count < limit:
                self._handle(ch, ch.conn.recv_bytes())
                count += 1
                if not ch.conn.poll():
                    return
        except (EOFError, OSError):
            ch.eof = True

    def _handle(self, ch: _Channel, data: bytes) -> None:
        view = memoryview(data)
        op, req, qid = _HEAD.unpack_from(view)
        body = view[_HEAD.size :]
        if op == _PUT:
            state = _states.get(qid)
            if state is not None:
                with state.cond:
                    state.items.append(body)
                    state.cond.notify()
                self._dispatch(state)
        elif op == _GET:
            self._get(ch, req, qid, _TIMEOUT.unpack_from(body)[0])
        elif op == _DONE:
            ch.done = ch.closed = True
            ch.error = bytes(body)

    def _get(self, ch: _Channel, req: int, qid: int, timeout: float) -> None:
        state = _states.get(qid)
        if state is None:
            msg = f"Q {qid} does not exist in its owner process {os.getpid()} any more"
            self._send(ch, _frame(_ERROR, req, qid, msg.encode()))
            return
        with state.cond:
            if state.items:
                raw = state.items.popleft()
            elif timeout == 0:
                raw = None
            else:
                waiter = _Waiter(ch, req)
                state.waiters.append(waiter)
                if timeout > 0:
                    deadline = time.monotonic() + timeout
                    heapq.heappush(self._timers, (deadline, next(self._seq), state, waiter))
                return
        if raw is None:
            self._send(ch, _frame(_EMPTY, req, qid))
        elif not self._send(ch, _frame(_ITEM, req, qid, raw)):
            self._give_back(state, raw)

    def _dispatch(self, state: _QState) -> None:
        # hand waiting messages to waiting workers, oldest first
        while True:
            with state.cond:
                if not state.items or not state.waiters:
                    return
                waiter = state.waiters.popleft()
                if waiter.done or waiter.channel.closed:
                    continue
                waiter.done = True
                raw = state.items.popleft()
            if not self._send(waiter.channel, _frame(_ITEM, waiter.req, state.qid, raw)):
                self._give_back(state, raw)

    def _give_back(self, state: _QState, raw: Any) -> None:
        # the worker died before it got the message: keep it for the others
        with state.cond:
            state.items.appendleft(raw)
            state.cond.notify()

    def _expire(self) -> float | None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, state, waiter = heapq.heappop(self._timers)
            with state.cond:
                if waiter.done:
                    continue
                waiter.done = True
                try:
                    state.waiters.remove(waiter)
                except ValueError:
                    pass
            self._send(waiter.channel, _frame(_EMPTY, waiter.req, state.qid))
        return max(0.0, self._timers[0][0] - now) if self._timers else None

    def _send(self, ch: _Channel, frame: bytes) -> bool:
        if ch.closed:
            return False
        try:
            ch.conn.send_bytes(frame)
            return True
        except OSError:
            ch.closed = True
            return False

    def _finish(self, ch: _Channel) -> None:
        # The process has exited: whatever it wrote is in the pipe now.
        if not ch.eof:
            self._read(ch, limit=None)
        ch.eof = ch.closed = True
        with self._mutex:
            self._channels.remove(ch)
            idle = not self._channels
        ch.conn.close()
        ch.finished.set()
        if idle:
            _purge_orphans()


# -- worker side --------------------------------------------------------------


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


# -- workers ------------------------------------------------------------------


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


# -- fork safety ----------------------------------------------------------------

# The owner ends of worker pipes are closed in a forked child by _core.procs;
# what is left to do here is this layer's own state.


def _after_fork_in_child() -> None:
    global _registry_lock, _states, _handles
    _registry_lock = threading.Lock()
    broker = _Broker._instance
    if broker is not None:  # the broker thread did not survive the fork
        for fd in (broker._wake_r, broker._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
    _Broker._instance = None
    _Broker._lock = threading.Lock()
    _Child.current = None
    # this process owns nothing yet; copied Qs see the pid and go remote
    _states = {}
    _handles = weakref.WeakValueDictionary()
    _released.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
